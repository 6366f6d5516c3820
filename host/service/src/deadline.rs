//! A job's wall-clock limit and its cancel switch, as the engine's [`Control`]: the only clock a job run reads.

use converge_engine::{Control, Interrupt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Ends a job when its wall-clock limit passes, or when asked to cancel.
#[derive(Debug)]
pub struct Deadline {
    clock: Mutex<(Instant, Duration)>,
    cancelled: AtomicBool,
}

impl Deadline {
    /// `limit` from now.
    pub fn new(limit: Duration) -> Self {
        Self { clock: Mutex::new((Instant::now(), limit)), cancelled: AtomicBool::new(false) }
    }

    /// Start the clock again with a new limit (a cancel already asked for stays).
    pub fn restart(&self, limit: Duration) {
        if let Ok(mut c) = self.clock.lock() {
            *c = (Instant::now(), limit);
        }
    }

    /// Ask the job to stop at its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Whether a cancel was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
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
        if self.is_cancelled() {
            Some(Interrupt::Cancel)
        } else if self.expired() {
            Some(Interrupt::JobTimeout)
        } else {
            None
        }
    }
}
