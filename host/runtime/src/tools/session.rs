//! One agent call's tool session (what `tools.invoke` reaches: declared names, the job's tools, their circuits,
//! the call's seed) and the job's circuit breakers.
//!
//! The circuit is deterministic although agents run in parallel: during a cycle every call starts from the
//! failure counts as they stood at the end of the previous cycle, and the counts move forward only between
//! cycles, by folding each call's invocations in agent-name order (the merge order).

use super::{MAX_INPUT, ToolSet, invoke};
use converge_engine::{ToolCall, ToolOutcome};
use converge_sandbox::{Sandbox, ToolHost, clip};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Consecutive failures of one tool in one job after which its circuit opens.
pub const CIRCUIT_THRESHOLD: u32 = 3;
/// Invocations one agent call may make.
pub const MAX_CALLS_PER_EXECUTION: usize = 64;

/// The failure counts of one job's tools, moved forward only between cycles (see the module docs).
#[derive(Debug, Default)]
pub struct Circuits(Mutex<CircuitState>);

#[derive(Debug, Default)]
struct CircuitState {
    /// Consecutive failures per tool name, as of the end of cycle `through`.
    failures: BTreeMap<String, u32>,
    /// Invocation outcomes per (cycle, agent), not yet folded in.
    pending: BTreeMap<(u32, String), Vec<(String, ToolOutcome)>>,
}

impl Circuits {
    /// The counts every call of `cycle` starts from: everything recorded for earlier cycles, folded in order.
    fn start(&self, cycle: u32) -> BTreeMap<String, u32> {
        let mut st = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let later = st.pending.split_off(&(cycle, String::new()));
        let earlier = std::mem::replace(&mut st.pending, later);
        for outcomes in earlier.into_values() {
            for (tool, outcome) in outcomes {
                step(&mut st.failures, &tool, outcome);
            }
        }
        st.failures.clone()
    }

    fn record(&self, cycle: u32, agent: &str, outcomes: Vec<(String, ToolOutcome)>) {
        if outcomes.is_empty() {
            return;
        }
        let mut st = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        st.pending.entry((cycle, agent.to_owned())).or_default().extend(outcomes);
    }
}

/// Move one tool's count: a success closes the circuit, a failure counts, other outcomes leave it.
fn step(failures: &mut BTreeMap<String, u32>, tool: &str, outcome: ToolOutcome) {
    match outcome {
        ToolOutcome::Ok => {
            failures.remove(tool);
        }
        ToolOutcome::Failed => *failures.entry(tool.to_owned()).or_default() += 1,
        ToolOutcome::Denied | ToolOutcome::Unknown | ToolOutcome::Unavailable => {}
    }
}

/// What an agent call needs to invoke tools: its declared names, the job's tools and circuits, its seed.
pub struct ToolSession {
    job: Arc<str>,
    sandbox: Arc<Sandbox>,
    set: Arc<ToolSet>,
    circuits: Arc<Circuits>,
    declared: Vec<String>,
    agent: String,
    cycle: u32,
    seed: [u8; 32],
    failures: Option<BTreeMap<String, u32>>,
    outcomes: Vec<(String, ToolOutcome)>,
    calls: Vec<ToolCall>,
}

impl std::fmt::Debug for ToolSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolSession").field("agent", &self.agent).field("cycle", &self.cycle).finish_non_exhaustive()
    }
}

impl ToolSession {
    /// The session of one agent call of job `job` in `cycle`, whose RNG seed is `seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job: Arc<str>,
        sandbox: Arc<Sandbox>,
        set: Arc<ToolSet>,
        circuits: Arc<Circuits>,
        declared: Vec<String>,
        agent: String,
        cycle: u32,
        seed: [u8; 32],
    ) -> Self {
        Self {
            job,
            sandbox,
            set,
            circuits,
            declared,
            agent,
            cycle,
            seed,
            failures: None,
            outcomes: Vec::new(),
            calls: Vec::new(),
        }
    }

    /// Invoke `name` with `input` for the agent: check, run in a fresh sandbox, record.
    fn call(&mut self, name: &str, input: &str) -> Result<String, (ToolOutcome, String)> {
        let shown = clip(name, 128).to_owned();
        let input_sha256 = converge_engine::hex(&Sha256::digest(input.as_bytes()));
        let mut call = ToolCall {
            tool: shown.clone(),
            digest: None,
            input_sha256,
            outcome: ToolOutcome::Ok,
            output: String::new(),
            fuel: 0,
            memory: 0,
            time_us: 0,
        };
        // A child of the calling agent's span: the call runs on the agent's thread.
        let span = tracing::debug_span!(
            "tool",
            converge.job_id = &*self.job,
            converge.agent = %self.agent,
            converge.cycle = i64::from(self.cycle),
            converge.tool = %shown,
            converge.fuel = tracing::field::Empty,
            converge.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let enter = span.enter();
        let result = self.run(name, &shown, input, &mut call);
        match &result {
            Ok(out) => call.output.clone_from(out),
            Err((outcome, message)) => {
                call.outcome = *outcome;
                call.output.clone_from(message);
            }
        }
        span.record("converge.fuel", i64::try_from(call.fuel).unwrap_or(i64::MAX))
            .record("converge.outcome", call.outcome.as_str());
        if call.outcome != ToolOutcome::Ok {
            span.record("otel.status_code", "ERROR");
        }
        drop(enter);
        if let Some(tool) = call.digest.as_ref().and(self.set.resolve(name)) {
            let key = tool.name.clone();
            if let Some(f) = self.failures.as_mut() {
                step(f, &key, call.outcome);
            }
            self.outcomes.push((key, call.outcome));
        }
        self.calls.push(call);
        result
    }

    fn run(
        &mut self,
        name: &str,
        shown: &str,
        input: &str,
        call: &mut ToolCall,
    ) -> Result<String, (ToolOutcome, String)> {
        if !self.declared.iter().any(|d| d == name) {
            return Err((ToolOutcome::Denied, format!("tool {shown} is not in this agent's declared tools")));
        }
        if self.calls.len() >= MAX_CALLS_PER_EXECUTION {
            return Err((
                ToolOutcome::Unavailable,
                format!("this call already made {MAX_CALLS_PER_EXECUTION} tool invocations, the most one call may"),
            ));
        }
        let Some(tool) = self.set.resolve(name).cloned() else {
            return Err((ToolOutcome::Unknown, format!("no tool named {shown} is installed or accepted")));
        };
        call.digest = Some(tool.digest.clone());
        let failures = self.failures.get_or_insert_with(|| self.circuits.start(self.cycle));
        let open = failures.get(&tool.name).copied().unwrap_or(0);
        if open >= CIRCUIT_THRESHOLD {
            return Err((
                ToolOutcome::Unavailable,
                format!("tool {shown} failed {open} times in a row in this job; its circuit is open"),
            ));
        }
        if input.len() > MAX_INPUT {
            return Err((
                ToolOutcome::Failed,
                format!("input of {} bytes is over the cap of {MAX_INPUT}", input.len()),
            ));
        }
        let seed = tool_seed(&self.seed, &tool.digest, self.calls.len());
        let run = invoke(&self.sandbox, &tool, input, seed);
        call.fuel = run.fuel;
        call.memory = run.memory;
        call.time_us = run.time_us;
        run.result.map_err(|e| (ToolOutcome::Failed, e.to_string()))
    }
}

impl ToolHost for ToolSession {
    fn invoke(&mut self, name: &str, input: &str) -> Result<String, (ToolOutcome, String)> {
        self.call(name, input)
    }

    /// The call is over: hand its failure counts to the job's circuits and return what it invoked.
    fn finish(self: Box<Self>) -> Vec<ToolCall> {
        let this = *self;
        this.circuits.record(this.cycle, &this.agent, this.outcomes);
        this.calls
    }
}

/// The seed of one invocation: SHA-256 over the calling agent's call seed, the tool and its position.
fn tool_seed(call: &[u8; 32], digest: &str, index: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"converge-tool-v1\0");
    h.update(call);
    h.update(digest.as_bytes());
    h.update((index as u64).to_le_bytes());
    h.finalize().into()
}
