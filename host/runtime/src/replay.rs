//! Replay: run a stored job again from its spec and its answers, through the same driver a worker uses, with the
//! components loaded now and the validated tools the job called (by the digests its trail recorded, from the
//! store, of the job's tenant), and compare the `context_hash` and every tool call with what was stored.

use crate::registry::Registry;
use crate::wasm::WasmRuntime;
use converge_engine::{CycleTrace, Executor, Inputs, Job, JobError, JobSpec, Journal, Status, drive};
use converge_service::{Deadline, Runtime};
use converge_store::{EventKind, Store, StoreError, ToolStatus};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Why a job cannot be replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such job in the store.
    #[error("no job {0} in the store")]
    NoSuchJob(String),
    /// The job has no result to compare yet.
    #[error("job {id} is {status} and has no result to compare yet")]
    NoResult {
        /// The job.
        id: String,
        /// Its status.
        status: Status,
    },
    /// The stored spec no longer parses, or names a component not loaded now.
    #[error("the stored spec of {id}: {message}")]
    Spec {
        /// The job.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// The components directories cannot be read.
    #[error("{0}")]
    Components(String),
}

/// A job's stop, as compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stop {
    /// Its status.
    pub status: Status,
    /// Cycles run.
    pub cycles: u32,
    /// Its context hash.
    pub context_hash: String,
}

/// The first tool call that differs, as each run made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirstDifference {
    /// The stored call (absent: the replay made more calls).
    pub stored: Option<String>,
    /// The replayed call (absent: the replay made fewer calls).
    pub replayed: Option<String>,
}

/// How the tool calls of the two runs compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCalls {
    /// Whether every call is the same (tool, digest, input, outcome, output).
    pub identical: bool,
    /// Calls in the stored trail.
    pub stored: usize,
    /// Calls in the replay.
    pub replayed: usize,
    /// The first call that differs.
    pub first_difference: Option<FirstDifference>,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// The job.
    pub id: String,
    /// The same `context_hash` and the same tool calls.
    pub identical: bool,
    /// The stored stop.
    pub stored: Stop,
    /// The replayed stop.
    pub replayed: Stop,
    /// Components whose digest differs from the one the job's start recorded, or that are gone.
    pub changed_components: Vec<String>,
    /// The tool calls compared.
    pub tool_calls: ToolCalls,
    /// Validated tools the job called that could not be loaded again (their calls will differ).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unloaded_tools: Vec<String>,
}

/// Replay the stored job `id`: `registry` loads the components as they are now (agents, invariants, trusted
/// tools); `store` gives the spec, the answers, the trail and the validated tools the job called. `progress`
/// hears of each replayed cycle.
///
/// # Errors
/// No such job, no result yet, a spec that no longer builds, or a store or directory failure.
pub fn replay(
    store: &dyn Store,
    registry: Registry,
    id: &str,
    executor: &impl Executor,
    progress: impl FnMut(&CycleTrace),
) -> Result<Replay, ReplayError> {
    let record = store.job(None, id)?.ok_or_else(|| ReplayError::NoSuchJob(id.to_owned()))?;
    let Some(stored_hash) = record.context_hash.clone() else {
        return Err(ReplayError::NoResult { id: id.to_owned(), status: record.status });
    };
    let answers = store.answers(id)?;
    let traces: Vec<CycleTrace> = store
        .events(id, 0)?
        .iter()
        .filter(|e| e.kind == EventKind::Cycle)
        .filter_map(|e| serde_json::from_str::<CycleTrace>(&e.data).ok())
        .collect();
    let stored_calls: Vec<String> = traces.iter().flat_map(tool_calls).collect();
    let spec_error = |message: String| ReplayError::Spec { id: id.to_owned(), message };
    let spec = JobSpec::from_json(&record.spec).map_err(|e| spec_error(e.to_string()))?;

    let runtime = WasmRuntime::new(registry);
    runtime.refresh().map_err(|e| ReplayError::Components(e.to_string()))?;
    let unloaded_tools = pin_tools(store, &runtime, &record.tenant, &traces)?;
    let catalog = runtime.catalog();
    let mut changed = Vec::new();
    for (name, digest) in &record.components {
        match catalog.loaded.get(name) {
            Some(l) if &l.digest == digest => {}
            Some(l) => changed.push(format!(
                "{name}: recorded {}, loaded {}",
                &digest[..12.min(digest.len())],
                &l.digest[..12.min(l.digest.len())]
            )),
            None => changed.push(format!("{name}: recorded, not loaded now")),
        }
    }

    let (agents, invariants) = runtime.roster(&spec, &record.tenant, id);
    let mut job = Job::new(&spec, &agents, &invariants).map_err(|e: JobError| spec_error(e.to_string()))?;
    let inputs = Inputs { answers, cancel_at: (record.status == Status::Cancelled).then_some(record.cycles) };
    let control = Deadline::new(Duration::from_millis(spec.budget.job_timeout_ms));
    let mut journal = Collect { calls: Vec::new(), progress };
    let Ok(_) = drive(&mut job, executor, &control, inputs, &mut journal);
    let replayed_calls = journal.calls;
    let result = job.result(id);

    let calls_identical = stored_calls == replayed_calls;
    let first_difference = stored_calls
        .iter()
        .zip(&replayed_calls)
        .position(|(a, b)| a != b)
        .or_else(|| (!calls_identical).then(|| stored_calls.len().min(replayed_calls.len())))
        .map(|i| FirstDifference { stored: stored_calls.get(i).cloned(), replayed: replayed_calls.get(i).cloned() });
    Ok(Replay {
        id: id.to_owned(),
        identical: result.context_hash == stored_hash && calls_identical,
        stored: Stop { status: record.status, cycles: record.cycles, context_hash: stored_hash },
        replayed: Stop { status: result.status, cycles: result.cycles, context_hash: result.context_hash },
        changed_components: changed,
        tool_calls: ToolCalls {
            identical: calls_identical,
            stored: stored_calls.len(),
            replayed: replayed_calls.len(),
            first_difference,
        },
        unloaded_tools,
    })
}

/// Make callable the validated tools the stored job called (by the digest its trail recorded), in the order
/// they were accepted: a tool accepted since the run does not change the replay, and a revoked one still
/// replays. Returns the ones that no longer load.
fn pin_tools(
    store: &dyn Store,
    runtime: &WasmRuntime,
    tenant: &str,
    traces: &[CycleTrace],
) -> Result<Vec<String>, StoreError> {
    let called: BTreeSet<&str> =
        traces.iter().flat_map(|t| &t.agents).flat_map(|a| &a.tools).filter_map(|c| c.digest.as_deref()).collect();
    let mut records = store.tools(Some(tenant))?;
    records.retain(|r| called.contains(r.digest.as_str()) && r.status != ToolStatus::Rejected);
    records.sort_by_key(|r| r.accepted_ms);
    let mut unloaded = Vec::new();
    for r in &records {
        let loaded = match store.tool_component(&r.tenant, &r.digest)? {
            Some(bytes) => runtime.activate(r, &bytes).map_err(|e| e.message),
            None => Err("its component is not stored".to_owned()),
        };
        if let Err(why) = loaded {
            unloaded.push(format!("{}: {why}", r.pinned()));
        }
    }
    Ok(unloaded)
}

/// Each tool invocation of a cycle, as a replay compares it: cycle, agent, tool, digest, input and outcome, and
/// the SHA-256 of the output (time and fuel may differ, the rest may not).
fn tool_calls(t: &CycleTrace) -> Vec<String> {
    t.agents
        .iter()
        .flat_map(|a| {
            a.tools.iter().map(move |c| {
                let output = converge_engine::hex(&Sha256::digest(c.output.as_bytes()));
                format!(
                    "cycle {} {} -> {}@{} input {} {:?} output {output}",
                    t.cycle,
                    a.agent,
                    c.tool,
                    c.digest.as_deref().unwrap_or("-"),
                    c.input_sha256,
                    c.outcome
                )
            })
        })
        .collect()
}

/// The replay's journal: collects the tool calls, tells `progress`, and never has new answers (a replay stops
/// where the job would wait for one it does not have).
struct Collect<F> {
    calls: Vec<String>,
    progress: F,
}

impl<F: FnMut(&CycleTrace)> Journal for Collect<F> {
    type Error = std::convert::Infallible;

    fn cycle(&mut self, _job: &Job, trace: &CycleTrace) -> Result<(), Self::Error> {
        self.calls.extend(tool_calls(trace));
        (self.progress)(trace);
        Ok(())
    }

    fn waiting(&mut self, _job: &Job, _given: &BTreeSet<String>) -> Result<BTreeMap<String, String>, Self::Error> {
        Ok(BTreeMap::new())
    }
}
