//! Live subscribers by job: the store's commit hook publishes each committed event to the job's channel, and
//! anyone following a job (`?wait=`, the event stream) subscribes before reading the store, then skips what it
//! read.

use converge_store::{Event, EventKind};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events a live subscriber may fall behind by before it re-reads the store.
const WATCH_BUFFER: usize = 256;

/// The channels of the jobs someone follows.
#[derive(Default)]
pub struct Watchers(Mutex<BTreeMap<String, broadcast::Sender<Arc<Event>>>>);

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

    /// Whether anyone listens to the job's live events.
    pub fn watched(&self, job: &str) -> bool {
        self.0.lock().is_ok_and(|m| m.get(job).is_some_and(|tx| tx.receiver_count() > 0))
    }

    /// Subscribe to a job's events from now on.
    pub fn subscribe(&self, job: &str) -> Option<broadcast::Receiver<Arc<Event>>> {
        let mut map = self.0.lock().ok()?;
        Some(map.entry(job.to_owned()).or_insert_with(|| broadcast::channel(WATCH_BUFFER).0).subscribe())
    }
}
