//! Jobs run before they are stored. A submission whose client waits for the result (`?wait=`, without an
//! `Idempotency-Key`) promises nothing until it answers: the answer is the job's result (200), or a 202 after
//! the wait. So the job is not written when it is admitted: a worker runs it at once from memory, and at its
//! stop the job, its start, its cycles and its stop are stored in one write ([`Store::create_run`]) — by the
//! waiting submission, which answers once that write has committed. Everything written is what the same run
//! written step by step would have left (the conformance suite holds both backends to it).
//!
//! Whatever needs the job in the store first stores it as it stands, under the run's lease, and the run goes on
//! with ordinary fenced writes: the wait running out (its 202 is answered after that commit), a run that holds
//! too many cycles, a drain, a shutdown. The entry of a job in `Service::unstored` is the one place that says
//! which side writes: every transition takes its lock, and every write it decides is sent under it, so the
//! store receives a job's writes in the order they were decided.
//!
//! A job that is never stored was never acknowledged: if the process dies, its client's request fails with it
//! and nothing was promised. A job run again after a crash is always stored, so the attempts that end without
//! a stop are counted as for any other.
//!
//! [`Store::create_run`]: converge_store::Store::create_run

use crate::service::{Service, now_ms};
use crate::worker::{Claimed, Run};
use converge_engine::{Job, JobSpec, Status};
use converge_store::{Admission, CycleRecord, JobRecord, Lease, NewJob, NewRun, Outcome, Reply, Started, rules, wait};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A job as admission built it (its spec parsed, its agents and invariants bound, the components they are),
/// for the worker that runs it before it is stored.
pub(crate) struct Prepared {
    pub(crate) spec: JobSpec,
    pub(crate) job: Job,
    pub(crate) components: BTreeMap<String, String>,
}

/// A job admitted and not stored yet.
pub(crate) struct Unstored {
    job: NewJob,
    /// Until a worker takes it.
    prepared: Option<Prepared>,
    /// The waiting submission, which stores the stop and answers with it.
    waiter: Option<oneshot::Sender<Handoff>>,
    /// Once a worker runs it: the run's lease, start and components.
    run: Option<Running>,
}

struct Running {
    lease: Lease,
    started_ms: u64,
    components: BTreeMap<String, String>,
    run: Arc<Run>,
}

/// A job and its run to store in one write.
pub(crate) struct Handoff {
    pub(crate) job: NewJob,
    pub(crate) run: NewRun,
}

impl Unstored {
    pub(crate) fn new(job: NewJob, prepared: Prepared, waiter: oneshot::Sender<Handoff>) -> Self {
        Self { job, prepared: Some(prepared), waiter: Some(waiter), run: None }
    }
}

impl Service {
    /// Start running `id` if it is a job not stored yet: the run's lease (attempt 1, a fresh token), the job as
    /// it would be stored, and as admission built it. `None`: the job is in the store (claim it there).
    pub(crate) fn start_unstored(&self, id: &str) -> Option<Claimed> {
        let mut map = self.unstored.lock().ok()?;
        let entry = map.get_mut(id).filter(|e| e.run.is_none())?;
        let prepared = entry.prepared.take()?;
        let lease = Lease { token: rules::new_token(), attempt: 1 };
        let started_ms = now_ms();
        let run = Arc::new(Run::new(lease.clone(), true));
        entry.run =
            Some(Running { lease: lease.clone(), started_ms, components: BTreeMap::new(), run: Arc::clone(&run) });
        let job = &entry.job;
        let record = JobRecord {
            id: job.id.clone(),
            seq: 0,
            tenant: job.tenant.clone(),
            status: Status::Running,
            spec: job.spec.clone(),
            goal: job.goal.clone(),
            labels: job.labels.clone(),
            created_ms: job.now_ms,
            updated_ms: started_ms,
            attempts: 1,
            cycles: 0,
            cancel_requested: false,
            components: BTreeMap::new(),
            context_hash: None,
            result: None,
            traceparent: job.traceparent.clone(),
        };
        Some(Claimed { started: Started { record, answers: BTreeMap::new(), lease }, run, prepared: Some(prepared) })
    }

    /// Record the components a run uses: kept with the job while it is not stored, else written (fenced).
    pub(crate) fn begin_run(&self, id: &str, lease: &Lease, components: BTreeMap<String, String>) {
        if let Ok(mut map) = self.unstored.lock()
            && let Some(running) = map.get_mut(id).and_then(|e| e.run.as_mut())
        {
            running.components = components;
            return;
        }
        // Not awaited: the store applies a run's writes in order, so a failure shows in the next awaited one.
        drop(self.store.begin(id, lease, components, now_ms()));
    }

    /// Store `id` now as it stands, if it is not stored: queued if no worker took it yet, else running under
    /// its run's lease with the cycles held so far. Returns the write's reply and the waiter's channel, to drop
    /// once the write has committed (the waiter then reads the job from the store).
    pub(crate) fn store_unstored(&self, id: &str) -> Option<(Reply<Admission>, Option<oneshot::Sender<Handoff>>)> {
        let mut map = self.unstored.lock().ok()?;
        let Unstored { job, waiter, run, .. } = map.remove(id)?;
        let reply = match run {
            None => self.store.create_job(job),
            Some(running) => {
                let run = Arc::clone(&running.run);
                run.stored_with(|cycles| self.store.create_run(job, self.new_run(running, cycles, None)))
            }
        };
        drop(map);
        Some((reply, waiter))
    }

    /// Store `id` now if it is not stored, and wait for the commit (on a thread that may block).
    pub(crate) fn store_now(&self, id: &str) {
        if let Some((reply, waiter)) = self.store_unstored(id) {
            match wait(reply) {
                Ok(Admission::Created) => {}
                Ok(other) => tracing::error!(job = %id, admission = ?other, "storing a running job found another"),
                Err(e) => tracing::error!(job = %id, error = %e, "storing a running job failed"),
            }
            drop(waiter);
        }
    }

    /// Store every job no worker took yet (the service stops taking jobs). Each waiter reads its job from the
    /// store once the write has committed; that is awaited on a thread of its own (this may be called on the
    /// async runtime).
    pub(crate) fn store_queued_unstored(&self) {
        let ids: Vec<String> = self
            .unstored
            .lock()
            .map(|m| m.iter().filter(|(_, e)| e.run.is_none()).map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        let sent: Vec<_> = ids.iter().filter_map(|id| self.store_unstored(id)).collect();
        if sent.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new().name("converge-store-queued".into()).spawn(move || {
            for (reply, waiter) in sent {
                if let Err(e) = wait(reply) {
                    tracing::error!(error = %e, "storing a queued job at shutdown failed");
                }
                drop(waiter);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the thread that stores queued jobs at shutdown");
        }
    }

    /// The run of a job not stored yet stopped at `stop` (an end, or waiting): hand the job and the run to its
    /// waiting submission to store and answer with, or — when the client went away — store them here.
    /// `Err(stop)`: the job is in the store; write the stop there as for any job.
    pub(crate) fn stop_unstored(&self, id: &str, stop: Outcome) -> Result<(), Outcome> {
        let Ok(mut map) = self.unstored.lock() else { return Err(stop) };
        let Some(Unstored { job, waiter, run: Some(running), .. }) = map.remove(id) else {
            return Err(stop);
        };
        let cycles = running.run.take_held();
        let handoff = Handoff { job, run: self.new_run(running, cycles, Some(stop)) };
        drop(map);
        let handoff = match waiter {
            Some(w) => match w.send(handoff) {
                Ok(()) => return Ok(()),
                Err(h) => h,
            },
            None => handoff,
        };
        // Nobody waits for it any more: store it, since it ran.
        match wait(self.store.create_run(handoff.job, handoff.run)) {
            Ok(Admission::Created) => {}
            Ok(other) => tracing::error!(admission = ?other, "storing a finished run found another job"),
            Err(e) => tracing::error!(error = %e, "storing a finished run failed; its client had gone"),
        }
        Ok(())
    }

    /// What a run has done, to store with its job.
    fn new_run(&self, running: Running, cycles: Vec<CycleRecord>, stop: Option<Outcome>) -> NewRun {
        let Running { lease, started_ms, components, .. } = running;
        NewRun {
            owner: self.config.owner.clone(),
            lease,
            lease_ms: self.lease_ms(),
            started_ms,
            components,
            cycles,
            stop,
            now_ms: now_ms(),
        }
    }

    /// How long a lease holds without renewal, in ms.
    pub(crate) fn lease_ms(&self) -> u64 {
        u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX)
    }
}
