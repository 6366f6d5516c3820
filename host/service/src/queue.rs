//! The bounded job queue between admission and the workers. Admission takes a [`Permit`] before it commits a
//! job, so a full queue is refused with nothing written, and a committed job always has a place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

struct Inner {
    ids: VecDeque<(String, Instant)>,
    reserved: usize,
    /// A doorbell waits in `ids` (an empty id): another rings no more until a worker takes it.
    rung: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
    closed: AtomicBool,
}

/// Job ids waiting for a worker, at most `capacity` from admission (restarts, answers and cancels may exceed
/// it: those jobs were admitted already). Clones share the queue.
#[derive(Clone)]
pub struct JobQueue(Arc<Shared>);

/// A reserved place in the queue; dropped unused, it frees the place. It owns its share of the queue, so the
/// task that commits a job can outlive the request that asked for it.
pub struct Permit {
    queue: Arc<Shared>,
    used: bool,
}

impl Permit {
    /// Put the admitted job in its place.
    pub fn push(mut self, id: String) {
        self.used = true;
        if let Ok(mut q) = self.queue.inner.lock() {
            q.reserved = q.reserved.saturating_sub(1);
            q.ids.push_back((id, Instant::now()));
        }
        self.queue.ready.notify_one();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.used
            && let Ok(mut q) = self.queue.inner.lock()
        {
            q.reserved = q.reserved.saturating_sub(1);
        }
    }
}

impl JobQueue {
    /// An empty queue admitting at most `capacity` jobs.
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Shared {
            inner: Mutex::new(Inner { ids: VecDeque::new(), reserved: 0, rung: false }),
            ready: Condvar::new(),
            capacity,
            closed: AtomicBool::new(false),
        }))
    }

    /// Reserve a place, or `None` when the queue is full.
    pub fn reserve(&self) -> Option<Permit> {
        let mut q = self.0.inner.lock().ok()?;
        if q.ids.len() + q.reserved >= self.0.capacity {
            return None;
        }
        q.reserved += 1;
        Some(Permit { queue: Arc::clone(&self.0), used: false })
    }

    /// Queue an admitted job regardless of the bound.
    pub fn push(&self, id: String) {
        if let Ok(mut q) = self.0.inner.lock() {
            q.ids.push_back((id, Instant::now()));
        }
        self.0.ready.notify_one();
    }

    /// Ring the doorbell: a worker wakes and looks for claimable jobs in a shared store (it pops an empty id).
    /// A burst of rings while one waits is one ring: a look finds every job the burst made claimable.
    pub fn ring(&self) {
        if let Ok(mut q) = self.0.inner.lock() {
            if q.rung {
                return;
            }
            q.rung = true;
            q.ids.push_back((String::new(), Instant::now()));
        }
        self.0.ready.notify_one();
    }

    /// The next job, blocking; `None` once closed.
    pub fn pop(&self) -> Option<String> {
        let mut q = self.0.inner.lock().ok()?;
        loop {
            if self.0.closed.load(Ordering::Acquire) {
                return None;
            }
            if let Some((id, _)) = q.ids.pop_front() {
                q.rung &= !id.is_empty();
                return Some(id);
            }
            q = self.0.ready.wait(q).ok()?;
        }
    }

    /// The next job, waiting at most `timeout`: `Ok(Some(id))`, `Ok(None)` when the time passed with nothing
    /// queued.
    ///
    /// # Errors
    /// The queue is closed.
    #[allow(clippy::result_unit_err)]
    pub fn pop_timeout(&self, timeout: std::time::Duration) -> Result<Option<String>, ()> {
        let start = Instant::now();
        let mut q = self.0.inner.lock().map_err(drop)?;
        loop {
            if self.0.closed.load(Ordering::Acquire) {
                return Err(());
            }
            if let Some((id, _)) = q.ids.pop_front() {
                q.rung &= !id.is_empty();
                return Ok(Some(id));
            }
            let Some(left) = timeout.checked_sub(start.elapsed()) else { return Ok(None) };
            q = self.0.ready.wait_timeout(q, left).map_err(drop)?.0;
        }
    }

    /// Wake every worker and make `pop` return `None`.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.ready.notify_all();
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Jobs waiting for a worker.
    pub fn len(&self) -> usize {
        self.0.inner.lock().map_or(0, |q| q.ids.len())
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The admission bound.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// How long the oldest waiting job has waited.
    pub fn oldest_wait(&self) -> Option<std::time::Duration> {
        self.0.inner.lock().ok()?.ids.front().map(|(_, t)| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::JobQueue;

    #[test]
    fn a_full_queue_refuses_and_a_dropped_permit_frees_its_place() {
        let q = JobQueue::new(2);
        let a = q.reserve();
        let b = q.reserve();
        assert!(a.is_some() && b.is_some());
        assert!(q.reserve().is_none(), "two places reserved of two");
        drop(a);
        let c = q.reserve();
        assert!(c.is_some(), "the dropped permit freed a place");
        if let Some(c) = c {
            c.push("j1".into());
        }
        assert_eq!(q.len(), 1);
        assert!(q.reserve().is_none());
        q.push("j2".into());
        assert_eq!(q.len(), 2, "push bypasses the bound for admitted jobs");
        assert_eq!(q.pop().as_deref(), Some("j1"));
        q.close();
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_burst_of_rings_is_one_ring_until_a_worker_takes_it() {
        let q = JobQueue::new(4);
        q.ring();
        q.push("j1".into());
        q.ring();
        q.ring();
        assert_eq!(q.len(), 2, "one ring and one job");
        assert_eq!(q.pop().as_deref(), Some(""));
        q.ring();
        assert_eq!(q.len(), 2, "the ring taken, a new one waits");
        assert_eq!(q.pop().as_deref(), Some("j1"));
        assert_eq!(q.pop().as_deref(), Some(""));
    }
}
