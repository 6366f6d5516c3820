//! The executor of service jobs.

use converge_engine::{Executor, RayonExecutor, SerialExecutor};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A job's calls fan out on the rayon pool while fewer jobs run than the pool has threads; once the jobs alone
/// fill the cores, each runs its calls on its own worker thread, which saves two thread hand-offs per cycle.
/// Results come back in index order either way, so the choice never changes a result.
pub struct AdaptiveExecutor {
    rayon: RayonExecutor,
    threads: usize,
    active: AtomicUsize,
}

impl AdaptiveExecutor {
    /// Fan out on `rayon` (a pool of `threads`) while there is room.
    pub fn new(rayon: RayonExecutor, threads: usize) -> Self {
        Self { rayon, threads, active: AtomicUsize::new(0) }
    }

    /// A job starts running on it.
    pub(crate) fn enter(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    /// A job stops running on it.
    pub(crate) fn leave(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Executor for AdaptiveExecutor {
    fn map<R: Send>(&self, len: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        if len <= 1 || self.active.load(Ordering::Acquire) >= self.threads {
            SerialExecutor.map(len, f)
        } else {
            self.rayon.map(len, f)
        }
    }
}
