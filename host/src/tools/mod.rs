//! Tools: components of world `converge-tool` that agents call through `tools.invoke`, each invocation in a fresh
//! sandbox under the tool's own limits.
//!
//! Two sources make up a job's [`ToolSet`]: the trusted tools directory (`--tools`, installed by the operator)
//! and tools that passed [`validate`] (accepted, or approved by a reviewer). A name resolves to the trusted tool
//! of that name, else to the latest validated one; `name@digest` names one component exactly.
//!
//! An invocation answers `denied` (the name is not in the agent's `tools`), `unknown` (nothing of that name),
//! `failed` (a trap, a limit, `err`, or an output over [`MAX_OUTPUT`]) or `unavailable` (the tool's circuit is
//! open after [`CIRCUIT_THRESHOLD`] consecutive failures in the job). Every invocation is recorded as a
//! [`ToolCall`] in the agent's trace.
//!
//! The circuit is deterministic although agents run in parallel: during a cycle every call starts from the
//! failure counts as they stood at the end of the previous cycle, and the counts move forward only between
//! cycles, by folding each call's invocations in agent-name order (the merge order).

pub mod validate;

use crate::bindings::tool::ConvergeToolPre;
use crate::bindings::types;
use crate::sandbox::{CallSetup, Limits, Sandbox, State, clip};
use converge_engine::{ToolCall, ToolOutcome};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wasmtime::component::Component;

pub use validate::{Manifest, Report, Verdict, validate};

/// Longest output a tool may return, in bytes; a longer one is a failure.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Longest input an agent may pass, in bytes; a longer one fails without running the tool.
pub const MAX_INPUT: usize = 1024 * 1024;
/// Consecutive failures of one tool in one job after which its circuit opens.
pub const CIRCUIT_THRESHOLD: u32 = 3;
/// How the message of a tool's own `err` begins (any other failure is a trap or a limit).
pub(crate) const TOOL_ERR_PREFIX: &str = "the tool returned an error: ";
/// Invocations one agent call may make.
pub const MAX_CALLS_PER_EXECUTION: usize = 64;

/// The limits of one tool invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolLimits {
    /// Fuel per invocation.
    pub fuel: u64,
    /// Linear memory per invocation, in MiB.
    pub memory_mb: u32,
    /// Wall-clock backstop per invocation, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for ToolLimits {
    /// What a tool gets unless a reviewer approved more.
    fn default() -> Self {
        Self { fuel: 100_000_000, memory_mb: 32, timeout_ms: 1_000 }
    }
}

impl ToolLimits {
    /// The most a manifest may ask for; more is rejected outright.
    pub const MAX: Self = Self { fuel: 1_000_000_000_000, memory_mb: 1024, timeout_ms: 60_000 };

    /// Whether any limit is above `other`.
    pub fn exceeds(&self, other: &Self) -> bool {
        self.fuel > other.fuel || self.memory_mb > other.memory_mb || self.timeout_ms > other.timeout_ms
    }

    /// The sandbox's view of these limits.
    pub fn sandbox(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            memory_bytes: u64::from(self.memory_mb) * 1024 * 1024,
            timeout: Duration::from_millis(self.timeout_ms),
        }
    }
}

/// Where a tool came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The operator's tools directory.
    Trusted,
    /// Submitted, validated, and accepted or approved.
    Validated,
}

/// A tool ready to invoke.
pub struct Tool {
    /// Its declared name.
    pub name: String,
    /// What `info()` said it does.
    pub description: String,
    /// SHA-256 of the component, lowercase hex.
    pub digest: String,
    /// Where it came from.
    pub source: Source,
    /// The tenant that submitted it (a validated tool): only that tenant's jobs can call it. `None` for a trusted
    /// tool, which every job can call.
    pub owner: Option<String>,
    /// Limits of each invocation.
    pub limits: ToolLimits,
    /// Linked and type-checked.
    pub pre: ConvergeToolPre<State>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool").field("name", &self.name).field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// Every callable tool: trusted ones by name, validated ones by name in the order they were accepted.
#[derive(Debug, Default, Clone)]
pub struct ToolSet {
    trusted: BTreeMap<String, Arc<Tool>>,
    validated: BTreeMap<String, Vec<Arc<Tool>>>,
}

impl ToolSet {
    /// A set of trusted tools (first of a name wins) and validated tools (in acceptance order).
    pub fn new(trusted: impl IntoIterator<Item = Arc<Tool>>, validated: impl IntoIterator<Item = Arc<Tool>>) -> Self {
        let mut set = Self::default();
        for t in trusted {
            set.trusted.entry(t.name.clone()).or_insert(t);
        }
        for t in validated {
            set.validated.entry(t.name.clone()).or_default().push(t);
        }
        set
    }

    /// The tool `name` (trusted first, else the latest validated) or `name@digest` (exactly that component).
    pub fn resolve(&self, name: &str) -> Option<&Arc<Tool>> {
        if let Some((name, digest)) = name.split_once('@') {
            let trusted = self.trusted.get(name).filter(|t| t.digest == digest);
            return trusted.or_else(|| self.validated.get(name)?.iter().rev().find(|t| t.digest == digest));
        }
        self.trusted.get(name).or_else(|| self.validated.get(name)?.last())
    }

    /// What the jobs of `tenant` may call: every trusted tool, and the validated tools `tenant` submitted.
    #[must_use]
    pub fn for_tenant(&self, tenant: &str) -> Self {
        let validated = self
            .validated
            .iter()
            .filter_map(|(name, tools)| {
                let own: Vec<Arc<Tool>> =
                    tools.iter().filter(|t| t.owner.as_deref() == Some(tenant)).cloned().collect();
                (!own.is_empty()).then(|| (name.clone(), own))
            })
            .collect();
        Self { trusted: self.trusted.clone(), validated }
    }

    /// Whether any validated tool is in the set.
    pub fn has_validated(&self) -> bool {
        !self.validated.is_empty()
    }

    /// Every tool, trusted first, each group by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tool>> {
        self.trusted.values().chain(self.validated.values().flatten())
    }

    /// How many tools.
    pub fn len(&self) -> usize {
        self.trusted.len() + self.validated.values().map(Vec::len).sum::<usize>()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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
    /// The session of one agent call in `cycle`, whose RNG seed is `seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sandbox: Arc<Sandbox>,
        set: Arc<ToolSet>,
        circuits: Arc<Circuits>,
        declared: Vec<String>,
        agent: String,
        cycle: u32,
        seed: [u8; 32],
    ) -> Self {
        Self {
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
    ///
    /// # Errors
    /// The outcome (`denied`, `unknown`, `failed`, `unavailable`) and a sentence for the agent.
    pub fn invoke(&mut self, name: &str, input: &str) -> Result<String, (ToolOutcome, String)> {
        let shown = clip(name, 128).to_owned();
        let input_sha256 = crate::hex(&Sha256::digest(input.as_bytes()));
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
        let result = self.run(name, &shown, input, &mut call);
        match &result {
            Ok(out) => call.output.clone_from(out),
            Err((outcome, message)) => {
                call.outcome = *outcome;
                call.output.clone_from(message);
            }
        }
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
        run.result.map_err(|m| (ToolOutcome::Failed, m))
    }

    /// The call is over: hand its failure counts to the job's circuits and return what it invoked.
    pub fn finish(self) -> Vec<ToolCall> {
        self.circuits.record(self.cycle, &self.agent, self.outcomes);
        self.calls
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

/// Link a tool component, type-check its export, and call its `info()` under the default tool limits.
///
/// # Errors
/// A sentence: it does not link, exports `tool` with the wrong type, or `info()` failed.
pub(crate) fn prepare(
    sandbox: &Sandbox,
    component: &Component,
) -> Result<(ConvergeToolPre<State>, types::ToolInfo), String> {
    let first = |e: &wasmtime::Error| format!("{e:#}").lines().next().unwrap_or_default().to_owned();
    let pre = sandbox.linker().instantiate_pre(component).map_err(|e| format!("does not link: {}", first(&e)))?;
    let pre = ConvergeToolPre::new(pre)
        .map_err(|e| format!("exports converge:agent/tool with the wrong type: {}", first(&e)))?;
    let out = sandbox.call(&ToolLimits::default().sandbox(), CallSetup::default(), |store| {
        let instance = pre.instantiate(&mut *store)?;
        instance.converge_agent_tool().call_info(&mut *store)
    });
    let info = out.result.map_err(|f| format!("info() failed ({}): {}", f.kind, f.message))?;
    Ok((pre, info))
}

/// A tool from a compiled component: linked, `info()` called, with the given limits.
///
/// # Errors
/// A sentence: it does not link, exports `tool` with the wrong type, `info()` failed, or its name is invalid.
pub fn from_component(
    sandbox: &Sandbox,
    component: &Component,
    digest: &str,
    limits: ToolLimits,
    source: Source,
) -> Result<Tool, String> {
    let (pre, info) = prepare(sandbox, component)?;
    crate::registry::check_tool_name(&info.name)?;
    Ok(Tool {
        name: info.name,
        description: info.description,
        digest: digest.to_owned(),
        source,
        owner: None,
        limits,
        pre,
    })
}

/// One invocation's result and resource use.
#[derive(Debug)]
pub struct Invocation {
    /// The output, or a sentence saying why there is none.
    pub result: Result<String, String>,
    /// Fuel used, wasm and host functions.
    pub fuel: u64,
    /// Peak linear memory, in bytes.
    pub memory: u64,
    /// Wall time.
    pub time_us: u64,
    /// What the tool tried and was refused (paths, sockets, name lookups, environment).
    pub attempts: Vec<String>,
}

/// Run `tool` on `input` in a fresh sandbox under its limits.
pub fn invoke(sandbox: &Sandbox, tool: &Tool, input: &str, seed: [u8; 32]) -> Invocation {
    let limits = tool.limits.sandbox();
    let out = sandbox.call(&limits, CallSetup { seed, tools: None }, |store| {
        let instance = tool.pre.instantiate(&mut *store)?;
        instance.converge_agent_tool().call_invoke(&mut *store, input)
    });
    let result = match out.result {
        Ok(Ok(output)) if output.len() > MAX_OUTPUT => {
            Err(format!("the output of {} bytes is over the cap of {MAX_OUTPUT} bytes", output.len()))
        }
        Ok(Ok(output)) => Ok(output),
        Ok(Err(message)) => Err(format!("{TOOL_ERR_PREFIX}{}", clip(&message, 4096))),
        Err(failure) => Err(format!("{}: {}", failure.kind, failure.message)),
    };
    Invocation {
        result,
        fuel: out.fuel,
        memory: out.memory,
        time_us: u64::try_from(out.elapsed.as_micros()).unwrap_or(u64::MAX),
        attempts: out.attempts,
    }
}
