//! Jobs over sandboxed components: the engine's `Agent` and `Invariant` traits implemented by loaded
//! components, with the job's limits and RNG seed, and a runner for one job.

use crate::bindings::types;
use crate::error::HostError;
use crate::registry::{Catalog, Loaded, Loadout};
use crate::sandbox::{CallSetup, Limits, Sandbox, ViewHandle, call_seed, clip};
use crate::tools::{Circuits, ToolSession, ToolSet};
use converge_engine::{
    Agent, AgentInfo, Control, CycleTrace, Effect, Execution, Fact, Failure, Interrupt, Invariant, InvariantInfo, Job,
    JobResult, JobSpec, Proposal, Question, RayonExecutor, View,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

/// Longest `err(..)` message kept from a guest.
const MAX_REFUSAL: usize = 4096;

/// The seed of a job's guest RNGs: SHA-256 over the spec without its labels (which agents do not see), so the
/// same job gets the same random numbers every time it runs.
pub fn job_seed(spec: &JobSpec) -> [u8; 32] {
    let mut spec = spec.clone();
    spec.labels.clear();
    let mut h = Sha256::new();
    h.update(b"converge-job-v1\0");
    h.update(serde_json::to_vec(&spec).unwrap_or_default());
    h.finalize().into()
}

/// A loaded agent bound to one job's limits and seed.
struct SandboxAgent {
    job: Arc<str>,
    loaded: Arc<Loaded>,
    info: AgentInfo,
    sandbox: Arc<Sandbox>,
    limits: Limits,
    seed: [u8; 32],
    tools: Arc<ToolSet>,
    circuits: Arc<Circuits>,
}

impl Agent for SandboxAgent {
    fn info(&self) -> &AgentInfo {
        &self.info
    }

    fn execute(&self, view: &View) -> Execution {
        let Loadout::Agent { pre, .. } = &self.loaded.component else {
            return Failure::trap("not an agent").into();
        };
        let span = tracing::debug_span!("agent", job = %self.job, agent = %self.info.name, cycle = view.cycle());
        let _enter = span.enter();
        let seed = call_seed(&self.seed, &self.info.name, view.cycle());
        let tools = (!self.info.tools.is_empty()).then(|| {
            ToolSession::new(
                Arc::clone(&self.sandbox),
                Arc::clone(&self.tools),
                Arc::clone(&self.circuits),
                self.info.tools.clone(),
                self.info.name.clone(),
                view.cycle(),
                seed,
            )
        });
        let setup = CallSetup { seed, tools };
        let out = self.sandbox.call(&self.limits, setup, |store| {
            let instance = pre.instantiate(&mut *store)?;
            let handle = store.data_mut().table_push(ViewHandle(view.clone()))?;
            let borrowed = Resource::new_borrow(handle.rep());
            instance.converge_agent_agent().call_execute(&mut *store, borrowed)
        });
        let result = match out.result {
            Ok(Ok(effect)) => Ok(effect_from(effect)),
            Ok(Err(message)) => Err(Failure::refused(clip(&message, MAX_REFUSAL))),
            Err(failure) => Err(failure),
        };
        let mut logs = out.logs;
        logs.extend(out.attempts.into_iter().map(|a| format!("refused: {a}")));
        Execution {
            result,
            fuel: out.fuel,
            memory: out.memory,
            logs,
            time_us: u64::try_from(out.elapsed.as_micros()).unwrap_or(u64::MAX),
            tools: out.tools,
        }
    }
}

fn fact_from(f: types::Fact) -> Fact {
    Fact { key: f.key, id: f.id, content: f.content }
}

fn effect_from(e: types::Effect) -> Effect {
    Effect {
        facts: e.facts.into_iter().map(fact_from).collect(),
        proposals: e
            .proposals
            .into_iter()
            .map(|p| Proposal { fact: fact_from(p.fact), confidence: p.confidence, rationale: p.rationale })
            .collect(),
        questions: e.questions.into_iter().map(|q| Question { id: q.id, prompt: q.prompt }).collect(),
    }
}

/// A loaded invariant bound to one job's limits and seed.
struct SandboxInvariant {
    job: Arc<str>,
    loaded: Arc<Loaded>,
    info: InvariantInfo,
    sandbox: Arc<Sandbox>,
    limits: Limits,
    seed: [u8; 32],
}

impl Invariant for SandboxInvariant {
    fn info(&self) -> &InvariantInfo {
        &self.info
    }

    fn check(&self, view: &View) -> Result<(), Failure> {
        let Loadout::Invariant { pre, .. } = &self.loaded.component else {
            return Err(Failure::trap("not an invariant"));
        };
        let span =
            tracing::debug_span!("invariant", job = %self.job, invariant = %self.info.name, cycle = view.cycle());
        let _enter = span.enter();
        let setup = CallSetup { seed: call_seed(&self.seed, &self.info.name, view.cycle()), tools: None };
        let out = self.sandbox.call(&self.limits, setup, |store| {
            let instance = pre.instantiate(&mut *store)?;
            let handle = store.data_mut().table_push(ViewHandle(view.clone()))?;
            let borrowed = Resource::new_borrow(handle.rep());
            instance.converge_agent_invariant().call_check(&mut *store, borrowed)
        });
        match out.result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Failure::refused(clip(&message, MAX_REFUSAL))),
            Err(failure) => Err(failure),
        }
    }
}

/// The agents and invariants a job is built from.
pub type Roster = (Vec<Arc<dyn Agent>>, Vec<Arc<dyn Invariant>>);

/// Every loaded agent and invariant of `catalog`, bound to `spec`'s limits and seed (and to job `id` in the
/// logs), calling the tools of `catalog`. The engine picks the ones the spec names (and rejects names that are
/// not loaded).
pub fn roster(catalog: &Catalog, sandbox: &Arc<Sandbox>, spec: &JobSpec, id: &str) -> Roster {
    roster_with_tools(catalog, &catalog.tools, sandbox, spec, id)
}

/// [`roster`], with the agents calling `tools` (the service gives each job its tenant's view of the tools).
pub fn roster_with_tools(
    catalog: &Catalog,
    tools: &Arc<ToolSet>,
    sandbox: &Arc<Sandbox>,
    spec: &JobSpec,
    id: &str,
) -> Roster {
    let limits = Limits::from_budget(&spec.budget);
    let seed = job_seed(spec);
    let job: Arc<str> = Arc::from(id);
    let circuits = Arc::new(Circuits::default());
    let agents = catalog
        .agents()
        .map(|(loaded, info)| {
            Arc::new(SandboxAgent {
                job: Arc::clone(&job),
                loaded: Arc::clone(loaded),
                info: info.clone(),
                sandbox: Arc::clone(sandbox),
                limits,
                seed,
                tools: Arc::clone(tools),
                circuits: Arc::clone(&circuits),
            }) as Arc<dyn Agent>
        })
        .collect();
    let invariants = catalog
        .invariants()
        .map(|(loaded, info)| {
            Arc::new(SandboxInvariant {
                job: Arc::clone(&job),
                loaded: Arc::clone(loaded),
                info: info.clone(),
                sandbox: Arc::clone(sandbox),
                limits,
                seed,
            }) as Arc<dyn Invariant>
        })
        .collect();
    (agents, invariants)
}

/// Ends a job when its wall-clock limit passes, or when asked to cancel.
#[derive(Debug)]
pub struct Deadline {
    clock: std::sync::Mutex<(Instant, Duration)>,
    cancelled: AtomicBool,
}

impl Deadline {
    /// `limit` from now.
    pub fn new(limit: Duration) -> Self {
        Self { clock: std::sync::Mutex::new((Instant::now(), limit)), cancelled: AtomicBool::new(false) }
    }

    /// Start the clock again with a new limit (a cancel already asked for stays).
    pub fn restart(&self, limit: Duration) {
        if let Ok(mut c) = self.clock.lock() {
            *c = (Instant::now(), limit);
        }
    }

    /// Ask the job to stop at its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Whether a cancel was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Time since the clock started.
    pub fn elapsed(&self) -> Duration {
        self.clock.lock().map_or(Duration::ZERO, |c| c.0.elapsed())
    }

    fn expired(&self) -> bool {
        self.clock.lock().map_or(true, |c| c.0.elapsed() >= c.1)
    }
}

impl Control for Deadline {
    fn interrupt(&self) -> Option<Interrupt> {
        if self.is_cancelled() {
            Some(Interrupt::Cancel)
        } else if self.expired() {
            Some(Interrupt::JobTimeout)
        } else {
            None
        }
    }
}

/// Run `spec` to a stop (a terminal status, or `waiting`) on `executor`, calling `progress` after each cycle.
///
/// # Errors
/// The spec is invalid or names an agent or invariant that is not loaded.
pub fn run_job(
    catalog: &Catalog,
    sandbox: &Arc<Sandbox>,
    spec: &JobSpec,
    id: &str,
    executor: &RayonExecutor,
    mut progress: impl FnMut(&CycleTrace),
) -> Result<JobResult, HostError> {
    let (agents, invariants) = roster(catalog, sandbox, spec, id);
    let mut job = Job::new(spec, &agents, &invariants)?;
    let control = Deadline::new(Duration::from_millis(spec.budget.job_timeout_ms));
    while let Some(trace) = job.step(executor, &control) {
        progress(trace);
    }
    let mut result = job.result(id);
    result.stats.wall_time_ms = u64::try_from(control.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(result)
}

/// Run a stored job again from its spec and its answers, as the service ran it: each answer is given as soon as
/// its question is open, and a job that was cancelled is cancelled once it has run `cancel_at` cycles. Stops at
/// an end or where the job would wait for an answer it does not have.
///
/// # Errors
/// The spec is invalid or names an agent or invariant that is not loaded.
#[allow(clippy::too_many_arguments)]
pub fn replay_job(
    catalog: &Catalog,
    sandbox: &Arc<Sandbox>,
    spec: &JobSpec,
    id: &str,
    executor: &RayonExecutor,
    answers: &BTreeMap<String, String>,
    cancel_at: Option<u32>,
    mut progress: impl FnMut(&CycleTrace),
) -> Result<JobResult, HostError> {
    let (agents, invariants) = roster(catalog, sandbox, spec, id);
    let mut job = Job::new(spec, &agents, &invariants)?;
    let control = Deadline::new(Duration::from_millis(spec.budget.job_timeout_ms));
    let mut given: Vec<&str> = Vec::new();
    loop {
        for (q, a) in answers {
            if !given.contains(&q.as_str()) && job.answer(q, a.clone()).is_ok() {
                given.push(q);
            }
        }
        if cancel_at.is_some_and(|c| job.cycles() >= c) {
            control.cancel();
        }
        if let Some(trace) = job.step(executor, &control) {
            progress(trace);
        } else if job.status() == converge_engine::Status::Waiting && cancel_at.is_some() {
            job.cancel();
        } else {
            break;
        }
    }
    let mut result = job.result(id);
    result.stats.wall_time_ms = u64::try_from(control.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(result)
}
