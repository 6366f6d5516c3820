//! The port to the component runtime: what the service needs from whatever loads and runs components. The
//! wasmtime runtime (`converge-runtime`) implements it for `serve`; tests implement it with native agents, so
//! the service is tested without building any WebAssembly.

use converge_engine::{Agent, AgentInfo, Invariant, InvariantInfo, JobSpec};
use converge_store::{Manifest, Report, ToolLimits, ToolRecord};
use std::sync::Arc;

/// The agents and invariants a job is built from.
pub type Roster = (Vec<Arc<dyn Agent>>, Vec<Arc<dyn Invariant>>);

/// A file that loaded: its declared name, file, SHA-256 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The declared name.
    pub name: String,
    /// The file it came from (file name only).
    pub file: String,
    /// SHA-256 of the bytes, lowercase hex.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// A loaded agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    /// Its file.
    pub component: Component,
    /// What `info()` declared.
    pub info: AgentInfo,
}

/// A loaded invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantEntry {
    /// Its file.
    pub component: Component,
    /// What `info()` declared.
    pub info: InvariantInfo,
}

/// A trusted tool (from the operator's tools directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedTool {
    /// Its declared name.
    pub name: String,
    /// What `info()` said it does.
    pub description: String,
    /// SHA-256 of the component.
    pub digest: String,
    /// Limits of each invocation.
    pub limits: ToolLimits,
}

/// A file that did not load, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// The file name.
    pub file: String,
    /// The declared name, when the component got far enough to declare one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why, in a sentence.
    pub reason: String,
}

/// What the runtime has loaded at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Agents, by name.
    pub agents: Vec<AgentEntry>,
    /// Invariants, by name.
    pub invariants: Vec<InvariantEntry>,
    /// Files of the agents directory that did not load, by file name.
    pub rejected: Vec<Rejection>,
    /// The trusted tools, by name.
    pub tools: Vec<TrustedTool>,
    /// Files of the tools directory that did not load, by file name.
    pub rejected_tools: Vec<Rejection>,
}

impl Inventory {
    /// The name and digest of every component `spec` runs (its agents, or every agent, and its invariants):
    /// what a job's start records, for audits and replays.
    pub fn components(&self, spec: &JobSpec) -> std::collections::BTreeMap<String, String> {
        let agents = self
            .agents
            .iter()
            .filter(|a| spec.agents.as_ref().is_none_or(|names| names.contains(&a.component.name)))
            .map(|a| &a.component);
        let invariants =
            self.invariants.iter().filter(|i| spec.invariants.contains(&i.component.name)).map(|i| &i.component);
        agents.chain(invariants).map(|c| (c.name.clone(), c.digest.clone())).collect()
    }
}

/// Why the runtime could not look at its directories.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{context}: {message}")]
pub struct RuntimeError {
    /// What it was doing (`reading agents/`).
    pub context: String,
    /// Why it failed.
    pub message: String,
}

/// What the service needs from the component runtime.
pub trait Runtime: Send + Sync {
    /// Look at the agents and tools directories again (new, changed and removed files) and return what is
    /// loaded now.
    ///
    /// # Errors
    /// A directory cannot be read; the last catalog stays.
    fn refresh(&self) -> Result<Arc<Inventory>, RuntimeError>;

    /// What is loaded now, without looking at the directories.
    fn inventory(&self) -> Arc<Inventory>;

    /// The loaded agents and invariants, bound to `spec` (its limits, its seed) and to job `id`, calling the
    /// trusted tools and the validated tools of `tenant`. The engine picks the ones the spec names.
    fn roster(&self, spec: &JobSpec, tenant: &str, id: &str) -> Roster;

    /// Run the validation pipeline (SPEC §6) on a submitted tool. Blocks: it compiles and runs the tests.
    fn validate(&self, bytes: &[u8], manifest: &Manifest) -> Report;

    /// Make the stored tool `record` (its component is `bytes`) callable by its tenant's jobs, with the limits
    /// its report granted; later acceptances of a name win it.
    ///
    /// # Errors
    /// The bytes do not match the digest, or no longer compile or link.
    fn activate(&self, record: &ToolRecord, bytes: &[u8]) -> Result<(), RuntimeError>;

    /// Make the validated tool `digest` of `tenant` uncallable.
    fn deactivate(&self, tenant: &str, digest: &str);

    /// Whether jobs of `tenant` can call `name` (or `name@digest`) now.
    fn callable(&self, tenant: &str, name: &str) -> bool;

    /// The stack size a thread that runs this runtime's calls needs (the service's workers run them when the
    /// jobs alone fill the cores).
    fn stack_size(&self) -> usize {
        2 << 20
    }
}
