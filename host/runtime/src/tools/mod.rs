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
//! [`ToolCall`](converge_engine::ToolCall) in the agent's trace (see `session.rs`).

mod session;
pub mod validate;

pub use session::{CIRCUIT_THRESHOLD, Circuits, MAX_CALLS_PER_EXECUTION, ToolSession};
pub use validate::{COMPILE_TIMEOUT, TESTS_TIMEOUT, validate};

use converge_engine::Failure;
use converge_engine::names::NameError;
use converge_sandbox::{Component, Limits, LinkError, Sandbox, ToolPre, clip};
use converge_store::ToolLimits;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest output a tool may return, in bytes; a longer one is a failure.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Longest input an agent may pass, in bytes; a longer one fails without running the tool.
pub use converge_store::tool::MAX_INPUT;

/// The sandbox's view of a tool's limits.
pub fn limits(l: &ToolLimits) -> Limits {
    Limits {
        fuel: l.fuel,
        memory_bytes: u64::from(l.memory_mb) * 1024 * 1024,
        timeout: Duration::from_millis(l.timeout_ms),
    }
}

/// Where a tool came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub pre: ToolPre,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool").field("name", &self.name).field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// Why a compiled component cannot be made a tool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// It does not link, or exports `tool` with the wrong type.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Its `info()` trapped, ran out of a limit, or failed otherwise.
    #[error("info() failed ({}): {}", .0.kind, .0.message)]
    Info(Failure),
    /// The name it declares is not a valid name.
    #[error(transparent)]
    Name(#[from] NameError),
}

impl Tool {
    /// The one way a tool is made: link the compiled `component`, type-check its export, call its `info()`
    /// under the default tool limits, and check the name it declares (the rules of agent names; `name@digest` is
    /// how callers pin one).
    ///
    /// # Errors
    /// It does not link, exports `tool` with the wrong type, `info()` failed, or its name is not a valid name.
    pub fn link(
        sandbox: &Sandbox,
        component: &Component,
        digest: &str,
        source: Source,
        owner: Option<String>,
        limits: ToolLimits,
    ) -> Result<Self, ToolError> {
        let pre = sandbox.link_tool(component)?;
        let out = sandbox.tool_info(&pre, &self::limits(&ToolLimits::default()));
        let (name, description) = out.result.map_err(ToolError::Info)?;
        converge_engine::names::check_name(&name)?;
        Ok(Self { name, description, digest: digest.to_owned(), source, owner, limits, pre })
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

    /// The trusted tools, by name.
    pub fn trusted(&self) -> impl Iterator<Item = &Arc<Tool>> {
        self.trusted.values()
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

/// Why an invocation gave no output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    /// The tool returned `err` with this message: its own answer, not a failure of the sandbox.
    Err(String),
    /// A trap or a limit ended the call.
    Failed(Failure),
    /// The output was longer than [`MAX_OUTPUT`] (its length).
    TooLarge(usize),
}

impl InvokeError {
    /// Whether the tool itself answered `err` (rather than trapping, hitting a limit or returning too much).
    pub fn is_tool_err(&self) -> bool {
        matches!(self, Self::Err(_))
    }
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Err(m) => write!(f, "the tool returned an error: {m}"),
            Self::Failed(failure) => write!(f, "{}: {}", failure.kind, failure.message),
            Self::TooLarge(n) => write!(f, "the output of {n} bytes is over the cap of {MAX_OUTPUT} bytes"),
        }
    }
}

/// One invocation's result and resource use.
#[derive(Debug)]
pub struct Invocation {
    /// The output, or why there is none.
    pub result: Result<String, InvokeError>,
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
    let out = sandbox.invoke(&tool.pre, &limits(&tool.limits), seed, input);
    let time_us = out.time_us();
    let result = match out.result {
        Ok(Ok(output)) if output.len() > MAX_OUTPUT => Err(InvokeError::TooLarge(output.len())),
        Ok(Ok(output)) => Ok(output),
        Ok(Err(message)) => Err(InvokeError::Err(clip(&message, 4096).to_owned())),
        Err(failure) => Err(InvokeError::Failed(failure)),
    };
    Invocation { result, fuel: out.fuel, memory: out.memory, time_us, attempts: out.attempts }
}
