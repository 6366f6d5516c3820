//! Admission and the writes clients make to a job: submit (ids, the canonical spec, a place in the queue, the
//! commit, the push), answer and cancel. Every front end calls these, so every front end gets the same rules
//! and bounds. Each write that must not be lost runs in a task of its own: a caller that goes away after the
//! commit cannot leave a committed job unqueued or a resumable job waiting.

use crate::error::ServiceError;
use crate::queue::Permit;
use crate::service::{Service, blocking, now_ms, reply};
use crate::unstored::{Handoff, Prepared, Unstored};
use crate::watch::Published;
use crate::worker::placeholder;
use converge_engine::{Job, JobResult, JobSpec, Status};
use converge_store::{Admission, AnswerOutcome, CancelOutcome, JobRecord, NewJob};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

/// How long admission trusts its last count of a shared queue's depth.
const DEPTH_FRESH: Duration = Duration::from_millis(100);

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What a submission got.
#[derive(Debug)]
pub enum Submitted {
    /// The job is committed; it has not ended (or the caller did not wait).
    Accepted {
        /// Its id.
        id: String,
        /// Its status now.
        status: Status,
    },
    /// The job ended within the wait.
    Ended {
        /// Its id.
        id: String,
        /// Its result (SPEC §4), as JSON: the bytes the store holds when the run that ended it handed them over.
        json: Arc<str>,
    },
}

impl Submitted {
    /// The job's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Accepted { id, .. } | Self::Ended { id, .. } => id,
        }
    }

    /// The result of a job that ended, parsed.
    pub fn result(&self) -> Option<JobResult> {
        match self {
            Self::Ended { json, .. } => serde_json::from_str(json).ok(),
            Self::Accepted { .. } => None,
        }
    }
}

/// Check an idempotency key: 1 to 255 visible ASCII characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming the rule.
pub fn check_idempotency_key(key: &str) -> Result<(), ServiceError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(ServiceError::Invalid(format!(
            "Idempotency-Key: 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(())
}

/// The trace context of a W3C `traceparent` header, as stored with the job: `00-<trace-id>-<parent-id>-<flags>`.
/// `None` for a value that is not one (W3C Trace Context says to ignore it and start a new trace, not to refuse
/// the request). A later version's value is read as version 00 when it starts like one.
pub fn trace_parent(header: &str) -> Option<String> {
    let header = header.trim_matches(|c| c == ' ' || c == '\t');
    let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let (version, rest) = header.split_at_checked(2)?;
    if !lower_hex(version) || version == "ff" || (version == "00" && header.len() != 55) {
        return None;
    }
    if header.len() < 55 || (header.len() > 55 && header.as_bytes()[55] != b'-') {
        return None;
    }
    let fields: Vec<&str> = rest.get(1..53)?.split('-').collect();
    let [trace, parent, flags] = fields.as_slice() else { return None };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let ok = rest.starts_with('-')
        && trace.len() == 32
        && parent.len() == 16
        && flags.len() == 2
        && [trace, parent, flags].iter().all(|f| lower_hex(f))
        && nonzero(trace)
        && nonzero(parent);
    ok.then(|| format!("00-{trace}-{parent}-{flags}"))
}

impl Service {
    /// Submit a job of `tenant` (see [`Service::submit_traced`]), outside any trace.
    ///
    /// # Errors
    /// As [`Service::submit_traced`].
    pub async fn submit(
        self: &Arc<Self>,
        tenant: &str,
        spec: JobSpec,
        idempotency_key: Option<String>,
        wait: Option<Duration>,
    ) -> Result<Submitted, ServiceError> {
        self.submit_traced(tenant, spec, idempotency_key, wait, None).await
    }

    /// Submit a job of `tenant`, its runs traced as children of `traceparent` (from [`trace_parent`]). The job is committed before this returns; with `wait`, it returns when the job
    /// ends or waits for answers, or after `wait` (at most `max_wait`), whichever comes first.
    ///
    /// # Errors
    /// An unknown agent or invariant ([`ServiceError::InvalidSpec`]), a bad or reused idempotency key, a full
    /// queue ([`ServiceError::Overloaded`]), or a store failure.
    pub async fn submit_traced(
        self: &Arc<Self>,
        tenant: &str,
        spec: JobSpec,
        idempotency_key: Option<String>,
        wait: Option<Duration>,
        traceparent: Option<String>,
    ) -> Result<Submitted, ServiceError> {
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
        }
        let wait = wait.map(|w| w.min(self.config.max_wait));
        let id = format!("job_{}", uuid::Uuid::now_v7().simple());
        let job = self.prepare(&spec, tenant, &id)?;
        // A shared queue is bounded by what every replica queued.
        if self.store.shared() && self.shared_depth().await >= self.queue.capacity() {
            return Err(self.overloaded());
        }
        let permit = self.queue.reserve().ok_or_else(|| self.overloaded())?;
        let canonical = serde_json::to_string(&spec).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let spec_hash = converge_engine::hex(&Sha256::digest(canonical.as_bytes()));
        let new = NewJob {
            id: id.clone(),
            tenant: tenant.to_owned(),
            spec: canonical,
            spec_hash,
            goal: spec.goal.clone(),
            labels: spec.labels.clone(),
            idempotency_key,
            traceparent,
            now_ms: now_ms(),
        };
        // Run at once from memory, stored at its stop — where this process's workers are the only ones to run it
        // (on a shared store a stored job may go to any idle replica).
        if let Some(wait) = wait
            && new.idempotency_key.is_none()
            && !self.store.shared()
            && self.config.workers > 0
        {
            let components = self.runtime.inventory().components(&spec);
            return self.submit_unstored(tenant, new, Prepared { spec, job, components }, permit, wait).await;
        }
        let svc = Arc::clone(self);
        let queued = id.clone();
        let (admission, watch) = tokio::spawn(async move {
            let admission = reply(svc.store.create_job(new)).await;
            let mut watch = None;
            if let Ok(Admission::Created) = admission {
                if let Ok(mut d) = svc.admission_depth.lock()
                    && let Some((_, n)) = d.as_mut()
                {
                    *n += 1;
                }
                // Nothing runs the job before it is queued, so subscribing here misses none of its stops (and a
                // refused or replayed submission leaves no channel behind).
                watch = wait.and_then(|_| svc.watch(&queued));
                permit.push(queued);
            }
            admission.map(|a| (a, watch))
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let (id, status, watch) = match admission {
            Admission::Created => {
                tracing::info!(job = %id, tenant = %tenant, "job accepted");
                (id, Status::Queued, watch)
            }
            Admission::Existing { id, status } => {
                let stoppable = matches!(status, Status::Queued | Status::Running);
                let watch = wait.filter(|_| stoppable).and_then(|_| self.watch(&id));
                // Look again after subscribing: a stop committed before the subscription is never published to it.
                let status = if watch.is_some() { self.record(tenant, &id).await?.status } else { status };
                (id, status, watch)
            }
            Admission::KeyConflict { id } => return Err(ServiceError::IdempotencyConflict { job: id }),
        };
        self.wait_stored(tenant, id, status, watch, wait).await
    }

    /// The answer to a submission of a stored job of `status`: with `wait` and a subscription made before that
    /// status was read, its result if it stops within `wait`, else its id and status.
    async fn wait_stored(
        &self,
        tenant: &str,
        id: String,
        status: Status,
        watch: Option<broadcast::Receiver<Arc<Published>>>,
        wait: Option<Duration>,
    ) -> Result<Submitted, ServiceError> {
        if let (Some(wait), Some(rx)) = (wait, watch)
            && matches!(status, Status::Queued | Status::Running)
            && let Some(json) = wait_for_stop(rx, wait).await.and_then(|p| p.result.clone())
        {
            return Ok(Submitted::Ended { id, json });
        }
        let record = self.record(tenant, &id).await?;
        if wait.is_some() && record.status.is_terminal() {
            let json = serde_json::to_string(&self.current_result(&record))
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            return Ok(Submitted::Ended { id, json: json.into() });
        }
        Ok(Submitted::Accepted { id, status: record.status })
    }

    /// A submission that waits, run before it is stored (see `unstored`): a worker runs the job from memory and
    /// hands its stop back here, where the job and the whole run are stored in one write and the answer follows
    /// that commit. If the wait runs out first, the job is stored as it stands and the answer is a 202 after
    /// that commit.
    async fn submit_unstored(
        self: &Arc<Self>,
        tenant: &str,
        new: NewJob,
        prepared: Prepared,
        permit: Permit,
        wait: Duration,
    ) -> Result<Submitted, ServiceError> {
        let id = new.id.clone();
        let (tx, mut rx) = oneshot::channel();
        self.unstored
            .lock()
            .map_err(|_| ServiceError::Internal("the table of jobs not stored yet is poisoned".into()))?
            .insert(id.clone(), Unstored::new(new, prepared, tx));
        if let Ok(mut d) = self.admission_depth.lock()
            && let Some((_, n)) = d.as_mut()
        {
            *n += 1;
        }
        permit.push(id.clone());
        tracing::info!(job = %id, tenant = %tenant, "job accepted");
        let since = Instant::now();
        let handoff = match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(handoff)) => Some(handoff),
            // The service stored it while it ran (a long run, a drain).
            Ok(Err(_)) => None,
            Err(_) => match self.store_unstored(&id) {
                Some((stored, waiter)) => {
                    let admission = reply(stored).await;
                    drop(waiter);
                    if !matches!(admission?, Admission::Created) {
                        return Err(ServiceError::Internal(format!("storing job {id} found another job")));
                    }
                    None
                }
                // Whoever took the entry just now sends the stop (a worker) or drops the channel once the job is
                // stored (a drain, a long run): either follows at once.
                None => rx.await.ok(),
            },
        };
        if let Some(Handoff { job, run }) = handoff {
            let stop = run.stop.as_ref().map(|o| (o.status, Arc::<str>::from(o.result.as_str())));
            if !matches!(reply(self.store.create_run(job, run)).await?, Admission::Created) {
                return Err(ServiceError::Internal(format!("storing job {id} found another job")));
            }
            match stop {
                Some((status, json)) if status.is_terminal() => return Ok(Submitted::Ended { id, json }),
                Some((status, _)) => return Ok(Submitted::Accepted { id, status }),
                None => {}
            }
        }
        // Stored: what is left of the wait, as for any stored job (subscribed before its status is read).
        let left = wait.saturating_sub(since.elapsed());
        let watch = self.watch(&id);
        let status = self.record(tenant, &id).await?.status;
        self.wait_stored(tenant, id, status, watch, Some(left)).await
    }

    /// The shared queue's depth for admission: counted in the store at most every [`DEPTH_FRESH`], and between
    /// two counts, the last count plus what this process admitted since. Counting on every submission costs the
    /// database more than the submission's own writes under load (the count walks every row not yet cleaned
    /// up); with one replica the depth used is never below the truth (jobs started since are still
    /// counted: it errs towards refusing) and misses at most what other replicas admit within `DEPTH_FRESH`.
    async fn shared_depth(&self) -> usize {
        if let Ok(d) = self.admission_depth.lock()
            && let Some((at, n)) = *d
            && at.elapsed() < DEPTH_FRESH
        {
            return n;
        }
        let n = self.queue_depth().await;
        if let Ok(mut d) = self.admission_depth.lock() {
            *d = Some((std::time::Instant::now(), n));
        }
        n
    }

    fn overloaded(&self) -> ServiceError {
        ServiceError::Overloaded {
            message: format!("the queue is full ({} jobs waiting to start); retry later", self.queue.capacity()),
            retry_after: self.config.retry_after,
        }
    }

    /// The job `id` of `tenant` as the engine builds it: unknown agent or invariant names are the client's
    /// mistake, named by the engine's check. A job run before it is stored runs this one.
    fn prepare(&self, spec: &JobSpec, tenant: &str, id: &str) -> Result<Job, ServiceError> {
        // The job calls the trusted tools and its own tenant's validated ones, never another tenant's.
        let (agents, invariants) = self.runtime.roster(spec, tenant, id);
        Job::new(spec, &agents, &invariants)
            .map(|j| j.traced_as(id))
            .map_err(|e| ServiceError::InvalidSpec(e.to_string()))
    }

    /// Answer an open question of a job of `tenant`. Returns whether the job had every answer and was queued
    /// to resume.
    ///
    /// # Errors
    /// No such job or question, an answered question, an ended job, an answer over `max_fact_bytes`, or a
    /// store failure.
    pub async fn answer(
        self: &Arc<Self>,
        tenant: &str,
        id: &str,
        question: &str,
        answer: String,
    ) -> Result<bool, ServiceError> {
        let record = self.record(tenant, id).await?;
        if let Ok(spec) = JobSpec::from_json(&record.spec)
            && answer.len() as u64 > spec.budget.max_fact_bytes
        {
            return Err(ServiceError::Invalid(format!(
                "answer: {} bytes, more than budget.max_fact_bytes ({})",
                answer.len(),
                spec.budget.max_fact_bytes
            )));
        }
        let svc = Arc::clone(self);
        let (t, j, q) = (tenant.to_owned(), id.to_owned(), question.to_owned());
        let outcome = tokio::spawn(async move {
            let outcome = reply(svc.store.answer(&t, &j, &q, &answer, now_ms())).await;
            if let Ok(AnswerOutcome::Recorded { resume: true }) = outcome {
                svc.queue.push(j);
            }
            outcome
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        match outcome {
            AnswerOutcome::Recorded { resume } => Ok(resume),
            AnswerOutcome::UnknownJob => Err(ServiceError::NotFound(format!("job {id}"))),
            AnswerOutcome::UnknownQuestion => {
                Err(ServiceError::UnknownQuestion { job: id.to_owned(), question: question.to_owned() })
            }
            AnswerOutcome::AlreadyAnswered => {
                Err(ServiceError::AlreadyAnswered { job: id.to_owned(), question: question.to_owned() })
            }
            AnswerOutcome::Finished(status) => Err(ServiceError::Finished { job: id.to_owned(), status }),
        }
    }

    /// Cancel a job of `tenant`: a queued job ends without running, a running one at its next cycle, a waiting
    /// one at once, with the facts it had. Returns its status when the cancel was recorded.
    ///
    /// # Errors
    /// No such job, an ended job, or a store failure.
    pub async fn cancel(self: &Arc<Self>, tenant: &str, id: &str) -> Result<Status, ServiceError> {
        check_job_id(id)?;
        let svc = Arc::clone(self);
        let (t, j) = (tenant.to_owned(), id.to_owned());
        let outcome = tokio::spawn(async move {
            let outcome = reply(svc.store.cancel(&t, &j, now_ms())).await;
            if let Ok(CancelOutcome::Requested { requeue, .. }) = outcome {
                svc.interrupt(&j);
                if requeue {
                    svc.queue.push(j);
                }
            }
            outcome
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        match outcome {
            CancelOutcome::Requested { status, .. } => Ok(status),
            CancelOutcome::UnknownJob => Err(ServiceError::NotFound(format!("job {id}"))),
            CancelOutcome::Finished(status) => Err(ServiceError::Finished { job: id.to_owned(), status }),
        }
    }

    /// The stored job `id` of `tenant`.
    pub(crate) async fn record(&self, tenant: &str, id: &str) -> Result<JobRecord, ServiceError> {
        check_job_id(id)?;
        let store = Arc::clone(&self.store);
        let (t, j) = (tenant.to_owned(), id.to_owned());
        blocking(move || store.job(Some(&t), &j)).await?.ok_or_else(|| ServiceError::NotFound(format!("job {id}")))
    }

    /// The SPEC §4 result of a job as it stands: the stored result when waiting or ended, the last cycle's
    /// snapshot while running, an empty result while queued.
    pub(crate) fn current_result(&self, record: &JobRecord) -> JobResult {
        if record.status == Status::Running
            && let Some(snap) = self.snapshot(&record.id)
        {
            let mut r = (*snap).clone();
            r.status = Status::Running;
            return r;
        }
        if let Some(text) = &record.result
            && let Ok(mut r) = serde_json::from_str::<JobResult>(text)
        {
            r.status = record.status;
            return r;
        }
        placeholder(&record.id, record.status, None)
    }
}

/// A job id is what `submit` makes: anything else names no job (not found, not a bad request).
///
/// # Errors
/// [`ServiceError::NotFound`].
pub(crate) fn check_job_id(id: &str) -> Result<(), ServiceError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ServiceError::NotFound("such job".into()));
    }
    Ok(())
}

/// Wait until the job ends or waits for answers, or `limit` passes; the stop, when one was published.
async fn wait_for_stop(mut rx: broadcast::Receiver<Arc<Published>>, limit: Duration) -> Option<Arc<Published>> {
    tokio::time::timeout(limit, async move {
        loop {
            match rx.recv().await {
                Ok(p) if p.event.kind.is_stop() => return Some(p),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::trace_parent;

    #[test]
    fn traceparents_are_read_as_w3c_trace_context_says() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_parent(ok).as_deref(), Some(ok));
        assert_eq!(trace_parent(&format!(" {ok}\t")).as_deref(), Some(ok));
        // A later version: its version 00 part, when it starts like one.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(trace_parent(later).as_deref(), Some(ok));
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é1",
        ] {
            assert_eq!(trace_parent(bad), None, "{bad:?}");
        }
    }
}
