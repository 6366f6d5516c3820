//! What clients read: a job's result at every stage, listings, the audit trail, and the live event stream (the
//! trail so far, then each event as it commits, resuming from a sequence number).

use crate::admission::check_job_id;
use crate::error::ServiceError;
use crate::service::{Service, blocking};
use converge_engine::JobResult;
use converge_store::{Event, EventKind, JobRecord, JobSummary, ListFilter};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// Events a follower may have in flight before it waits for its reader.
const FOLLOW_BUFFER: usize = 64;

impl Service {
    /// A job's SPEC §4 result, with its status at every stage.
    ///
    /// # Errors
    /// No such job for this tenant, or a store failure.
    pub async fn result(&self, tenant: &str, id: &str) -> Result<JobResult, ServiceError> {
        let record = self.record(tenant, id).await?;
        Ok(self.current_result(&record))
    }

    /// A page of the tenant's jobs, newest first.
    ///
    /// # Errors
    /// A store failure.
    pub async fn list(&self, tenant: &str, filter: ListFilter) -> Result<Vec<JobSummary>, ServiceError> {
        let store = Arc::clone(&self.store);
        let tenant = tenant.to_owned();
        blocking(move || store.list(Some(&tenant), &filter)).await
    }

    /// A job and its whole trail, in order.
    ///
    /// # Errors
    /// No such job for this tenant, or a store failure.
    pub async fn trail(&self, tenant: &str, id: &str) -> Result<(JobRecord, Vec<Event>), ServiceError> {
        let record = self.record(tenant, id).await?;
        let store = Arc::clone(&self.store);
        let id = id.to_owned();
        let events = blocking(move || store.events(&id, 0)).await?;
        Ok((record, events))
    }

    /// Follow a job's trail: every event after `after` (a sequence number, 0 for all), then each event as it
    /// commits, until `end` (after which the channel closes) or until the receiver is dropped. A follower that
    /// falls behind the live channel reads the store again from where it was, so it never loses or repeats an
    /// event.
    ///
    /// # Errors
    /// No such job for this tenant, or a store failure.
    pub async fn follow(&self, tenant: &str, id: &str, after: u64) -> Result<mpsc::Receiver<Event>, ServiceError> {
        check_job_id(id)?;
        let record = self.record(tenant, id).await?;
        let live = if record.status.is_terminal() { None } else { self.watch(id) };
        // Its cycles are written as they happen while this follower lives.
        let following = live.as_ref().map(|_| self.watchers.follow(id));
        let store = Arc::clone(&self.store);
        let id = id.to_owned();
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        tokio::spawn(async move {
            let _following = following;
            let mut last = after;
            let mut live = live;
            loop {
                let (store2, id2) = (Arc::clone(&store), id.clone());
                let Ok(Ok(history)) = tokio::task::spawn_blocking(move || store2.events(&id2, last)).await else {
                    return;
                };
                for e in history {
                    last = e.seq;
                    let end = e.kind == EventKind::End;
                    if tx.send(e).await.is_err() || end {
                        return;
                    }
                }
                let Some(rx) = live.as_mut() else { return };
                // A live event says there is more: the trail is read again from where this follower is (a notice
                // from a shared store carries no payload, and a follower that fell behind must not skip any).
                loop {
                    match rx.recv().await {
                        Ok(p) if p.event.seq <= last => {}
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            live = None;
                            break;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}
