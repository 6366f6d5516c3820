//! The workers: OS threads that claim jobs and run each to its next stop through the engine's one driver,
//! writing the trail, the questions, the wait and the end to the store under the run's lease. A job is its spec
//! plus its answers: a worker always runs it from its spec, giving the stored answers as the questions open, so a
//! job resumed after a restart, a takeover, an answer or a cancel reaches the state of an uninterrupted run.
//!
//! With a store of its own (SQLite) a worker claims the jobs its process queued, by id; with a shared store
//! (PostgreSQL) it claims those by id too, and the oldest claimable job of any replica when it has none, when
//! another replica rings the doorbell, and every `poll` (see [`Service::work_shared`]).
//! Every write of a run carries its lease; a write refused for a lost lease stops the run, and it writes nothing
//! more. The lease keeper renews the leases of the runs in flight, and tells them of cancels.

use crate::deadline::Deadline;
use crate::service::{Service, now_ms};
use crate::unstored::Prepared;
use converge_engine::{CycleTrace, ErrorInfo, Inputs, Job, JobResult, JobSpec, Journal, Status, drive};
use converge_store::{
    ClaimRequest, CycleRecord, JobRecord, Lease, NewQuestion, Outcome, Park, Started, StoreError, wait,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Cycles of a job held before they are written (unless someone may be watching).
const MAX_PENDING_CYCLES: usize = 16;
/// On a shared store, the longest a cycle is held before it is written, for whoever follows the job through
/// another replica (see [`Service::flush_held_cycles`]).
pub(crate) const LIVE_DELAY: Duration = Duration::from_millis(50);

/// A run in flight: its controls, its lease, and the cycles it has not written yet.
pub(crate) struct Run {
    pub(crate) deadline: Deadline,
    pub(crate) lease: Lease,
    held: std::sync::Mutex<Held>,
    /// When the live snapshot was last taken.
    snapshot: std::sync::Mutex<std::time::Instant>,
    /// The job is not stored yet (see `unstored`): nobody can read or follow it, and its cycles stay held
    /// until it is stored. Changed only with `held` locked.
    unstored: AtomicBool,
}

/// Cycles not written yet, and since when the oldest waits.
#[derive(Default)]
struct Held {
    cycles: Vec<CycleRecord>,
    since: Option<std::time::Instant>,
}

/// A job a worker is to run: its start, its run, and — for a job run before it is stored — the job as
/// admission built it.
pub(crate) struct Claimed {
    pub(crate) started: Started,
    pub(crate) run: Arc<Run>,
    pub(crate) prepared: Option<Prepared>,
}

impl Run {
    pub(crate) fn new(lease: Lease, unstored: bool) -> Self {
        Self {
            deadline: Deadline::new(Duration::MAX),
            lease,
            held: std::sync::Mutex::default(),
            snapshot: std::sync::Mutex::new(std::time::Instant::now()),
            unstored: AtomicBool::new(unstored),
        }
    }

    /// Whether its job is not stored yet.
    pub(crate) fn is_unstored(&self) -> bool {
        self.unstored.load(Ordering::Acquire)
    }

    /// The cycles held, taken (the job's run is stored with them).
    pub(crate) fn take_held(&self) -> Vec<CycleRecord> {
        self.held.lock().map(|mut h| std::mem::take(&mut *h).cycles).unwrap_or_default()
    }

    /// Store the job with the cycles held so far through `store` (which sends the write), and from then on write
    /// this run's cycles as for any stored job: a flush that starts later is sent after that write.
    pub(crate) fn stored_with<T>(&self, store: impl FnOnce(Vec<CycleRecord>) -> T) -> T {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sent = store(std::mem::take(&mut *held).cycles);
        self.unstored.store(false, Ordering::Release);
        sent
    }

    /// Whether the live snapshot is due: [`LIVE_DELAY`] since the last one (or the run's start). Building one
    /// copies the whole context, and a short job ends before anyone could read it.
    fn snapshot_due(&self) -> bool {
        let Ok(mut at) = self.snapshot.lock() else { return true };
        if at.elapsed() < LIVE_DELAY {
            return false;
        }
        *at = std::time::Instant::now();
        true
    }

    /// Hold a cycle; returns how many are held.
    fn hold(&self, cycle: CycleRecord) -> usize {
        let Ok(mut h) = self.held.lock() else { return 0 };
        h.since.get_or_insert_with(std::time::Instant::now);
        h.cycles.push(cycle);
        h.cycles.len()
    }

    /// Send the held cycles to the store (when `older_than` the oldest has waited at least that long), and
    /// return the reply. Sent under the lock: of two flushes, the first sent takes every held cycle, so the
    /// store receives a run's cycles in order, and before any stop the worker sends after its own flush.
    fn flush(
        &self,
        store: &dyn converge_store::Store,
        id: &str,
        older_than: Option<Duration>,
    ) -> Option<converge_store::Reply<()>> {
        let mut h = self.held.lock().ok()?;
        if self.is_unstored() {
            return None;
        }
        let due = match (older_than, h.since) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(d), Some(t)) => t.elapsed() >= d,
        };
        if !due || h.cycles.is_empty() {
            return None;
        }
        h.since = None;
        Some(store.cycles(id, &self.lease, std::mem::take(&mut h.cycles), now_ms()))
    }
}

impl Service {
    /// A worker's life: claim and run jobs until the service stops taking them.
    pub(crate) fn work(&self) {
        if self.store.shared() {
            self.work_shared();
        } else {
            while let Some(id) = self.queue.pop() {
                if let Some(started) = self.take(id) {
                    self.run(started);
                }
            }
        }
    }

    /// On a shared store a worker claims by id the jobs this process queued (a submission, an answer, a
    /// cancel: one lookup of the job's row), and looks through the whole queue (the oldest claimable job of any
    /// replica, or an expired lease) when its own queue is empty, when another replica rings the doorbell, and
    /// at least once every `poll`, busy or not, so a dead replica's jobs are taken over even under load. Looking
    /// through the queue walks every row not yet cleaned up of the jobs that moved through it, which under load
    /// costs more database time than the rest of a job; by id, it costs one index lookup.
    fn work_shared(&self) {
        let poll = self.config.poll;
        let mut looked: Option<std::time::Instant> = None;
        // The last look found nothing: wait for a job, a doorbell or the next poll.
        let mut idle = false;
        while !self.queue.is_closed() {
            let since = looked.map_or(poll, |t| t.elapsed());
            let job = if since >= poll {
                None
            } else {
                let wait = if idle { poll.saturating_sub(since) } else { Duration::ZERO };
                match self.queue.pop_timeout(wait) {
                    Err(()) => break,
                    Ok(id) => id.filter(|id| !id.is_empty()),
                }
            };
            // A job by id may come back `None`: another replica took it first (or holds its row this instant; the
            // next look finds it).
            let started = if let Some(id) = job {
                self.take(id)
            } else {
                looked = Some(std::time::Instant::now());
                let started = self.claim(None);
                idle = started.is_none();
                started
            };
            if let Some(started) = started {
                self.run(started);
            }
        }
    }

    /// The job `id` this process queued, to run: from memory when it is not stored yet, else claimed.
    fn take(&self, id: String) -> Option<Claimed> {
        self.start_unstored(&id).or_else(|| self.claim(Some(id)))
    }

    fn claim(&self, job: Option<String>) -> Option<Claimed> {
        let request = ClaimRequest {
            owner: self.config.owner.clone(),
            job,
            lease_ms: self.lease_ms(),
            max_attempts: self.config.max_attempts,
            now_ms: now_ms(),
        };
        match wait(self.store.claim(request)) {
            Ok(started) => started.map(|started| {
                let run = Arc::new(Run::new(started.lease.clone(), false));
                Claimed { started, run, prepared: None }
            }),
            Err(e) => {
                tracing::error!(error = %e, "claiming a job failed");
                // Do not spin on a store that fails; the job stays claimable.
                std::thread::sleep(self.config.poll);
                None
            }
        }
    }

    fn run(&self, Claimed { started, run, prepared }: Claimed) {
        let id = started.record.id.clone();
        let span = tracing::info_span!(
            "job",
            converge.job_id = %id,
            converge.tenant = %started.record.tenant,
            converge.attempt = i64::from(started.lease.attempt),
            converge.cycles = tracing::field::Empty,
            converge.outcome = tracing::field::Empty,
        );
        if let (Some(parent), Some(traceparent)) = (&self.config.span_parent.0, &started.record.traceparent) {
            parent(&span, traceparent);
        }
        let _enter = span.enter();
        if let Ok(mut r) = self.running.lock() {
            r.insert(id.clone(), Arc::clone(&run));
        }
        self.executor.enter();
        let outcome = self.run_claimed(started, &run, prepared);
        self.executor.leave();
        match outcome {
            Ok(()) => {}
            Err(StoreError::LeaseLost(_)) => {
                span.record("converge.outcome", "lease_lost");
                tracing::warn!("the job's lease was lost; another run owns it, this one wrote nothing more");
            }
            Err(e) => {
                span.record("converge.outcome", "unfinished");
                tracing::error!(error = %e, "job left unfinished; it runs again once its lease expires");
            }
        }
        if self.forget_run(&id, &run)
            && let Ok(mut l) = self.live.lock()
        {
            l.remove(&id);
        }
    }

    /// Forget this run of `id` (only this one: an answer may have queued the job again and another worker may
    /// run it now). Returns whether it was still recorded.
    fn forget_run(&self, id: &str, run: &Arc<Run>) -> bool {
        let Ok(mut r) = self.running.lock() else { return false };
        if r.get(id).is_some_and(|d| Arc::ptr_eq(d, run)) {
            r.remove(id);
            return true;
        }
        false
    }

    /// Run a claimed job to its next stop: an end (stored), waiting for answers (stored as `waiting`), or given
    /// back (a drain).
    fn run_claimed(&self, started: Started, run: &Arc<Run>, prepared: Option<Prepared>) -> Result<(), StoreError> {
        let Started { record, answers, lease } = started;
        let id = record.id.as_str();
        let Prepared { spec, mut job, components } = match prepared {
            Some(p) => p,
            None => match self.prepare_stored(&record) {
                Ok(p) => p,
                Err((kind, message)) => return self.fail(id, &lease, kind, &message),
            },
        };
        self.begin_run(id, &lease, components);
        let deadline = &run.deadline;
        deadline.restart(Duration::from_millis(spec.budget.job_timeout_ms));
        let inputs = Inputs { answers, cancel_at: record.cancel_requested.then_some(record.cycles) };
        let mut journal = StoreJournal { svc: self, id, run, deadline };
        let status = drive(&mut job, &self.executor, deadline, inputs, &mut journal)?;
        journal.flush();
        tracing::Span::current()
            .record("converge.cycles", i64::from(job.cycles()))
            .record("converge.outcome", status.as_str());
        if deadline.is_lost() {
            return Err(StoreError::LeaseLost(id.to_owned()));
        }
        if status == Status::Waiting {
            return Ok(());
        }
        if status == Status::Cancelled && deadline.is_released() && !deadline.is_cancelled() {
            self.store_now(id);
            wait(self.store.release(id, &lease, now_ms()))?;
            tracing::info!(cycles = job.cycles(), "job given back unfinished; another run takes it");
            return Ok(());
        }
        let elapsed = deadline.elapsed();
        let end = outcome(&job, id, deadline);
        // Counted, and no longer running, before the end commits: whoever sees the end (a `?wait=`, the event
        // stream) then sees the counters agree.
        self.observe(|o| o.finished(status, elapsed));
        let still_ours = self.forget_run(id, run);
        if let Err(end) = self.stop_unstored(id, end) {
            // Whoever waits for this end (a `?wait=`) gets the stored bytes with the `end` event.
            self.watchers.offer(id, lease.attempt, &end.result);
            wait(self.store.finish(id, &lease, end))?;
        }
        if still_ours && let Ok(mut l) = self.live.lock() {
            l.remove(id);
        }
        tracing::info!(status = %status, cycles = job.cycles(), "job ended");
        Ok(())
    }

    /// A stored job as the engine builds it, or why it cannot be (the kind of error and its message).
    fn prepare_stored(&self, record: &JobRecord) -> Result<Prepared, (&'static str, String)> {
        let id = record.id.as_str();
        let spec = JobSpec::from_json(&record.spec)
            .map_err(|e| ("invalid_spec", format!("the stored spec no longer parses: {e}")))?;
        // The job calls the trusted tools and its own tenant's validated ones, never another tenant's.
        let (agents, invariants) = self.runtime.roster(&spec, &record.tenant, id);
        let job = Job::new(&spec, &agents, &invariants)
            .map_err(|e| ("unknown_agent", format!("cannot start: {e}")))?
            .traced_as(id);
        let components = self.runtime.inventory().components(&spec);
        Ok(Prepared { spec, job, components })
    }

    /// End a job that cannot be built (its spec or its agents are gone) as `agent_failed`, with the reason.
    fn fail(&self, id: &str, lease: &Lease, kind: &str, message: &str) -> Result<(), StoreError> {
        tracing::warn!(kind, message, "job cannot run");
        tracing::Span::current().record("converge.outcome", Status::AgentFailed.as_str());
        let result =
            placeholder(id, Status::AgentFailed, Some(ErrorInfo { kind: kind.into(), message: message.into() }));
        let outcome = Outcome {
            status: Status::AgentFailed,
            cycles: 0,
            context_hash: result.context_hash.clone(),
            result: serde_json::to_string(&result).unwrap_or_default(),
            now_ms: now_ms(),
        };
        self.observe(|o| o.finished(Status::AgentFailed, Duration::ZERO));
        match self.stop_unstored(id, outcome) {
            Ok(()) => Ok(()),
            Err(outcome) => wait(self.store.finish(id, lease, outcome)),
        }
    }

    /// The runs in flight now, by job.
    fn runs(&self) -> Vec<(String, Arc<Run>)> {
        self.running
            .lock()
            .map(|r| r.iter().map(|(id, run)| (id.clone(), Arc::clone(run))).collect())
            .unwrap_or_default()
    }

    /// Write the cycles a run has held for [`LIVE_DELAY`] or longer: on a shared store whoever follows a job
    /// through another replica sees its cycles that much later at most, and a short job's cycles are written in
    /// one statement with its end.
    pub(crate) fn flush_held_cycles(&self) {
        for (id, run) in self.runs() {
            drop(run.flush(self.store.as_ref(), &id, Some(LIVE_DELAY)));
        }
    }

    /// Renew the lease of every run in flight, once; stop a run whose lease is gone, cancel one a client
    /// cancelled (perhaps through another replica).
    pub(crate) fn renew_leases(&self) {
        let lease_ms = self.lease_ms();
        // A job not stored yet has no lease in the store.
        for (id, run) in self.runs().into_iter().filter(|(_, run)| !run.is_unstored()) {
            match wait(self.store.renew(&id, &run.lease, lease_ms, now_ms())) {
                Ok(r) if !r.held => {
                    tracing::warn!(job = %id, "lease lost at renewal; stopping the run");
                    run.deadline.lose();
                }
                Ok(r) if r.cancel_requested => run.deadline.cancel(),
                Ok(_) => {}
                Err(e) => tracing::warn!(job = %id, error = %e, "renewing a lease failed; retrying at the next round"),
            }
        }
    }
}

/// Where a worker's drive reports: the store (under the run's lease), the live snapshot, the observers.
struct StoreJournal<'a> {
    svc: &'a Service,
    id: &'a str,
    run: &'a Run,
    deadline: &'a Deadline,
}

impl StoreJournal<'_> {
    /// Write the cycles held so far (without waiting: the stop that follows is committed after them).
    fn flush(&mut self) {
        drop(self.run.flush(self.svc.store.as_ref(), self.id, None));
    }
}

impl Journal for StoreJournal<'_> {
    type Error = StoreError;

    fn cycle(&mut self, job: &Job, trace: &CycleTrace) -> Result<(), StoreError> {
        if self.deadline.is_lost() {
            return Err(StoreError::LeaseLost(self.id.to_owned()));
        }
        self.svc.observe(|o| o.cycle(trace));
        let questions = job
            .open_questions()
            .into_iter()
            .filter(|q| trace.questions.contains(&q.id))
            .map(|q| NewQuestion { id: q.id, prompt: q.prompt, agent: q.agent })
            .collect();
        let text = serde_json::to_string(trace).unwrap_or_default();
        let held = self.run.hold(CycleRecord { cycle: trace.cycle, trace: text, questions });
        if held >= MAX_PENDING_CYCLES && self.run.is_unstored() {
            // A long run: store its job now, and write its cycles as they come from here on.
            self.svc.store_now(self.id);
        }
        // A job run again after a crash produces its cycles again, so they need not be durable one by one: they
        // are written in one batch at the job's stop, at once while someone watches here, when the batch grows,
        // and on a shared store (where someone may follow the job through another replica) within
        // `LIVE_DELAY`. A cycle that asked questions is committed before the live result shows them: whoever
        // reads a question there can answer it at once.
        if !trace.questions.is_empty() {
            if let Some(reply) = self.run.flush(self.svc.store.as_ref(), self.id, None) {
                wait(reply)?;
            }
        } else if self.svc.watchers.watched(self.id) || held >= MAX_PENDING_CYCLES {
            self.flush();
        }
        // What a read of the running job shows: the state at most `LIVE_DELAY` and one cycle old, and at once
        // the questions a cycle asked (nobody can read a job that is not stored yet).
        if !self.run.is_unstored()
            && (!trace.questions.is_empty() || self.run.snapshot_due())
            && let Ok(mut l) = self.svc.live.lock()
        {
            l.insert(self.id.to_owned(), Arc::new(job.result(self.id)));
        }
        Ok(())
    }

    fn waiting(&mut self, job: &Job, given: &BTreeSet<String>) -> Result<BTreeMap<String, String>, StoreError> {
        self.flush();
        // A job not stored yet has no answers: nobody knew it.
        let Err(stop) = self.svc.stop_unstored(self.id, outcome(job, self.id, self.deadline)) else {
            return Ok(BTreeMap::new());
        };
        let seen = given.iter().cloned().collect();
        match wait(self.svc.store.park(self.id, &self.run.lease, seen, stop))? {
            Park::Parked => Ok(BTreeMap::new()),
            Park::Answers(more) => Ok(more),
        }
    }
}

/// A job's stop, as the store keeps it.
fn outcome(job: &Job, id: &str, deadline: &Deadline) -> Outcome {
    let mut result = job.result(id);
    result.stats.wall_time_ms = deadline.elapsed_ms();
    Outcome {
        status: result.status,
        cycles: result.cycles,
        context_hash: result.context_hash.clone(),
        result: serde_json::to_string(&result).unwrap_or_default(),
        now_ms: now_ms(),
    }
}

/// A result for a job that has not run (queued) or could not start.
pub fn placeholder(id: &str, status: Status, error: Option<ErrorInfo>) -> JobResult {
    JobResult::empty(id, status, error)
}
