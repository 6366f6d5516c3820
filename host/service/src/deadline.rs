//! A run's controls, as the engine's [`Control`]: its wall-clock limit, and the three ways it is stopped from
//! outside — a client's cancel, a lost lease (another run owns the job now: write nothing more), a release (the
//! process drains: give the job back). The only clock a job run reads.

use converge_engine::{Control, Interrupt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Ends a run when its wall-clock limit passes, or when it is cancelled, loses its lease or is released.
#[derive(Debug)]
pub struct Deadline {
    clock: Mutex<(Instant, Duration)>,
    cancelled: AtomicBool,
    lost: AtomicBool,
    released: AtomicBool,
}

impl Deadline {
    /// `limit` from now.
    pub fn new(limit: Duration) -> Self {
        Self {
            clock: Mutex::new((Instant::now(), limit)),
            cancelled: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            released: AtomicBool::new(false),
        }
    }

    /// Start the clock again with a new limit (a stop already asked for stays).
    pub fn restart(&self, limit: Duration) {
        if let Ok(mut c) = self.clock.lock() {
            *c = (Instant::now(), limit);
        }
    }

    /// Ask the job to stop at its next check, as cancelled.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Whether a cancel was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The run's lease is gone: stop at the next check and write nothing more.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Whether the lease is gone.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// The process drains: stop at the next check and give the job back.
    pub fn release(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// Whether the run is to give its job back.
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Time since the clock started.
    pub fn elapsed(&self) -> Duration {
        self.clock.lock().map_or(Duration::ZERO, |c| c.0.elapsed())
    }

    /// Whole milliseconds since the clock started.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn expired(&self) -> bool {
        self.clock.lock().map_or(true, |c| c.0.elapsed() >= c.1)
    }
}

impl Control for Deadline {
    fn interrupt(&self) -> Option<Interrupt> {
        if self.is_cancelled() || self.is_lost() || self.is_released() {
            Some(Interrupt::Cancel)
        } else if self.expired() {
            Some(Interrupt::JobTimeout)
        } else {
            None
        }
    }
}
