//! The workers: OS threads that take job ids from the queue and run each to its next stop through the engine's
//! one driver, writing the trail, the questions, the wait and the end to the store. A job is its spec plus its
//! answers: a worker always runs it from its spec, giving the stored answers as the questions open, so a job
//! resumed after a restart, an answer or a cancel reaches the state of an uninterrupted run.

use crate::deadline::Deadline;
use crate::service::{Service, now_ms};
use converge_engine::{CycleTrace, ErrorInfo, Inputs, Job, JobResult, JobSpec, Journal, Stats, Status, drive};
use converge_store::{CycleRecord, NewQuestion, Outcome, Park, StoreError, wait};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Cycles of a job held before they are written (unless someone watches).
const MAX_PENDING_CYCLES: usize = 16;

impl Service {
    /// A worker's life: run queued jobs until the queue closes.
    pub(crate) fn work(&self) {
        while let Some(id) = self.queue.pop() {
            let span = tracing::info_span!("job", job = %id);
            let _enter = span.enter();
            let deadline = Arc::new(Deadline::new(Duration::MAX));
            if let Ok(mut r) = self.running.lock() {
                r.insert(id.clone(), Arc::clone(&deadline));
            }
            self.executor.enter();
            let outcome = self.run_one(&id, &deadline);
            self.executor.leave();
            if let Err(e) = outcome {
                tracing::error!(error = %e, "job left unfinished; it resumes at the next start");
            }
            if self.forget_run(&id, &deadline)
                && let Ok(mut l) = self.live.lock()
            {
                l.remove(&id);
            }
        }
    }

    /// Forget this run of `id` (only this one: an answer may have queued the job again and another worker may
    /// run it now). Returns whether it was still recorded.
    fn forget_run(&self, id: &str, deadline: &Arc<Deadline>) -> bool {
        let Ok(mut r) = self.running.lock() else { return false };
        if r.get(id).is_some_and(|d| Arc::ptr_eq(d, deadline)) {
            r.remove(id);
            return true;
        }
        false
    }

    /// Run one job to its next stop: an end (stored), or waiting for answers (stored as `waiting`).
    fn run_one(&self, id: &str, deadline: &Arc<Deadline>) -> Result<(), StoreError> {
        let Some(record) = self.store.job(None, id)? else {
            tracing::warn!("queued job is not in the store");
            return Ok(());
        };
        if record.status.is_terminal() {
            return Ok(());
        }
        let spec = match JobSpec::from_json(&record.spec) {
            Ok(s) => s,
            Err(e) => return self.fail(id, "invalid_spec", &format!("the stored spec no longer parses: {e}")),
        };
        // The job calls the trusted tools and its own tenant's validated ones, never another tenant's.
        let (agents, invariants) = self.runtime.roster(&spec, &record.tenant, id);
        let components = self.runtime.inventory().components(&spec);
        let mut job = match Job::new(&spec, &agents, &invariants) {
            Ok(j) => j,
            Err(e) => return self.fail(id, "unknown_agent", &format!("cannot start: {e}")),
        };
        let started = wait(self.store.start(id, components, now_ms()))?;
        deadline.restart(Duration::from_millis(spec.budget.job_timeout_ms));
        let inputs = Inputs {
            answers: started.answers,
            cancel_at: started.record.cancel_requested.then_some(started.record.cycles),
        };
        let mut journal = StoreJournal { svc: self, id, deadline, pending: Vec::new() };
        let status = drive(&mut job, &self.executor, deadline.as_ref(), inputs, &mut journal)?;
        journal.flush();
        if status == Status::Waiting {
            return Ok(());
        }
        let elapsed = deadline.elapsed();
        let end = outcome(&job, id, deadline);
        // Counted, and no longer running, before the end commits: whoever sees the end (a `?wait=`, the event
        // stream) then sees the counters agree.
        self.observe(|o| o.finished(status, elapsed));
        let still_ours = self.forget_run(id, deadline);
        wait(self.store.finish(id, end))?;
        if still_ours && let Ok(mut l) = self.live.lock() {
            l.remove(id);
        }
        tracing::info!(status = %status, cycles = job.cycles(), "job ended");
        Ok(())
    }

    /// End a job that cannot be built (its spec or its agents are gone) as `agent_failed`, with the reason.
    fn fail(&self, id: &str, kind: &str, message: &str) -> Result<(), StoreError> {
        tracing::warn!(kind, message, "job cannot run");
        let result =
            placeholder(id, Status::AgentFailed, Some(ErrorInfo { kind: kind.into(), message: message.into() }));
        let outcome = Outcome {
            status: Status::AgentFailed,
            cycles: 0,
            context_hash: result.context_hash.clone(),
            result: serde_json::to_string(&result).unwrap_or_default(),
            now_ms: now_ms(),
        };
        wait(self.store.finish(id, outcome))?;
        self.observe(|o| o.finished(Status::AgentFailed, Duration::ZERO));
        Ok(())
    }
}

/// Where a worker's drive reports: the store, the live snapshot, the observers.
struct StoreJournal<'a> {
    svc: &'a Service,
    id: &'a str,
    deadline: &'a Deadline,
    pending: Vec<CycleRecord>,
}

impl StoreJournal<'_> {
    /// Write the cycles held so far (without waiting: the stop that follows is committed after them).
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            drop(self.svc.store.cycles(self.id, std::mem::take(&mut self.pending), now_ms()));
        }
    }
}

impl Journal for StoreJournal<'_> {
    type Error = StoreError;

    fn cycle(&mut self, job: &Job, trace: &CycleTrace) -> Result<(), StoreError> {
        self.svc.observe(|o| o.cycle(trace));
        let questions = job
            .open_questions()
            .into_iter()
            .filter(|q| trace.questions.contains(&q.id))
            .map(|q| NewQuestion { id: q.id, prompt: q.prompt, agent: q.agent })
            .collect();
        let text = serde_json::to_string(trace).unwrap_or_default();
        self.pending.push(CycleRecord { cycle: trace.cycle, trace: text, questions });
        // A job run again after a crash produces its cycles again, so they need not be durable one by one:
        // they are written in one batch at the job's stop, or at once while someone watches live or the batch
        // grows.
        if self.svc.watchers.watched(self.id) || self.pending.len() >= MAX_PENDING_CYCLES {
            self.flush();
        }
        if let Ok(mut l) = self.svc.live.lock() {
            l.insert(self.id.to_owned(), Arc::new(job.result(self.id)));
        }
        Ok(())
    }

    fn waiting(&mut self, job: &Job, given: &BTreeSet<String>) -> Result<BTreeMap<String, String>, StoreError> {
        self.flush();
        let seen = given.iter().cloned().collect();
        match wait(self.svc.store.park(self.id, seen, outcome(job, self.id, self.deadline)))? {
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
    JobResult {
        id: id.to_owned(),
        status,
        reason: None,
        cycles: 0,
        facts: Vec::new(),
        open_questions: Vec::new(),
        diagnostics: Vec::new(),
        context_hash: String::new(),
        deterministic: true,
        stats: Stats::default(),
        error,
    }
}
