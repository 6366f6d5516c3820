//! Live subscribers by job: the store's commit hook publishes each committed event to the job's channel, and
//! anyone following a job (`?wait=`, the event stream) subscribes before reading the store, then skips what it
//! read. A follower of the event stream also holds a [`Following`], so that its job's cycles are written as
//! they happen; a `?wait=` waits for the stop only, and lets them be held.

use converge_store::{Event, EventKind};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events a live subscriber may fall behind by before it re-reads the store.
const WATCH_BUFFER: usize = 256;

/// The channels of the jobs someone follows, and how many follow each job's every event.
#[derive(Default)]
pub struct Watchers(Mutex<BTreeMap<String, broadcast::Sender<Arc<Event>>>>, Mutex<BTreeMap<String, usize>>);

/// A follower of a job's every event, counted while it lives.
pub struct Following {
    watchers: Arc<Watchers>,
    job: String,
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Ok(mut m) = self.watchers.1.lock()
            && let Some(n) = m.get_mut(&self.job)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.job);
            }
        }
    }
}

impl Watchers {
    /// Publish a committed event; forget the job's channel at its end or when nobody listens.
    pub fn publish(&self, event: &Event) {
        let Ok(mut map) = self.0.lock() else { return };
        if let Some(tx) = map.get(&event.job)
            && (tx.send(Arc::new(event.clone())).is_err() || event.kind == EventKind::End)
        {
            map.remove(&event.job);
        }
    }

    /// Whether anyone follows the job's every event here (not only its stop).
    pub fn watched(&self, job: &str) -> bool {
        self.1.lock().is_ok_and(|m| m.contains_key(job))
    }

    /// Count a follower of the job's every event until the returned value is dropped.
    pub fn follow(self: &Arc<Self>, job: &str) -> Following {
        if let Ok(mut m) = self.1.lock() {
            *m.entry(job.to_owned()).or_insert(0) += 1;
        }
        Following { watchers: Arc::clone(self), job: job.to_owned() }
    }

    /// Subscribe to a job's events from now on.
    pub fn subscribe(&self, job: &str) -> Option<broadcast::Receiver<Arc<Event>>> {
        let mut map = self.0.lock().ok()?;
        Some(map.entry(job.to_owned()).or_insert_with(|| broadcast::channel(WATCH_BUFFER).0).subscribe())
    }
}
