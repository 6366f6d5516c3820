//! Live subscribers by job: the store's commit hook publishes each committed event to the job's channel, and
//! anyone following a job (`?wait=`, the event stream) subscribes before reading the store, then skips what it
//! read. A follower of the event stream also holds a [`Following`], so that its job's cycles are written as
//! they happen; a `?wait=` waits for the stop only, and lets them be held.
//!
//! A run about to end a job someone subscribed to offers the result it is storing ([`Watchers::offer`]); the
//! job's `end` event then carries it to the subscribers, so a `?wait=` answers with those bytes instead of
//! reading the job back and serialising it again.

use converge_store::{Event, EventKind};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events a live subscriber may fall behind by before it re-reads the store.
const WATCH_BUFFER: usize = 256;

/// A committed event as a job's subscribers get it.
#[derive(Debug)]
pub struct Published {
    /// The event.
    pub event: Event,
    /// With the `end` of the run that offered it: the job's result as that run stored it (SPEC §4 JSON).
    pub result: Option<Arc<str>>,
}

/// A job's channel, and the result offered by the run of `attempt` about to end it.
struct Channel {
    tx: broadcast::Sender<Arc<Published>>,
    offered: Option<(u32, Arc<str>)>,
}

/// The channels of the jobs someone follows, and how many follow each job's every event.
#[derive(Default)]
pub struct Watchers(Mutex<BTreeMap<String, Channel>>, Mutex<BTreeMap<String, usize>>);

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
    /// Publish a committed event; forget the job's channel at its end or when nobody listens. An `end` of the
    /// run that offered a result carries it.
    pub fn publish(&self, event: &Event) {
        let Ok(mut map) = self.0.lock() else { return };
        let Some(ch) = map.get_mut(&event.job) else { return };
        let end = event.kind == EventKind::End;
        let result = match ch.offered.take() {
            Some((attempt, text)) if end && attempt == event.attempt => Some(text),
            other => {
                ch.offered = other;
                None
            }
        };
        if ch.tx.send(Arc::new(Published { event: event.clone(), result })).is_err() || end {
            map.remove(&event.job);
        }
    }

    /// The run of `attempt` is about to store `result` as the job's end: its `end` event carries it to whoever
    /// subscribed by then. Nothing is kept for a job nobody subscribed to.
    pub fn offer(&self, job: &str, attempt: u32, result: &str) {
        if let Ok(mut map) = self.0.lock()
            && let Some(ch) = map.get_mut(job)
        {
            ch.offered = Some((attempt, Arc::from(result)));
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
    pub fn subscribe(&self, job: &str) -> Option<broadcast::Receiver<Arc<Published>>> {
        let mut map = self.0.lock().ok()?;
        let ch = map
            .entry(job.to_owned())
            .or_insert_with(|| Channel { tx: broadcast::channel(WATCH_BUFFER).0, offered: None });
        Some(ch.tx.subscribe())
    }
}
