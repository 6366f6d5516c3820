//! What a job tells the world: its status, the SPEC §4 result, diagnostics and the per-cycle trace.
//!
//! These are plain serde types; every collection is ordered (`Vec` in a defined order or `BTreeMap`), so
//! serializing the same job twice gives the same bytes.

use crate::model::{FailureKind, InvariantClass};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where a job stands (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, not started (set by hosts).
    Queued,
    /// Cycles are running.
    Running,
    /// At a fixed point with open questions; resumes when they are answered.
    Waiting,
    /// A fixed point, acceptance invariants hold.
    Converged,
    /// A budget ran out; see [`Reason`].
    BudgetExhausted,
    /// Two versions of one fact.
    Conflict,
    /// An invariant failed.
    InvariantViolated,
    /// A required agent failed.
    AgentFailed,
    /// Cancelled by a client.
    Cancelled,
}

impl Status {
    /// Whether the job can no longer change.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running | Self::Waiting)
    }

    /// The SPEC name, `snake_case`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Converged => "converged",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Conflict => "conflict",
            Self::InvariantViolated => "invariant_violated",
            Self::AgentFailed => "agent_failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which budget ended a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `max_cycles` cycles ran and the last was not quiet.
    Cycles,
    /// An insertion would have exceeded `max_facts`.
    Facts,
    /// `job_timeout_ms` passed (wall clock: the result is not deterministic).
    JobTimeout,
}

impl Reason {
    /// The SPEC name, `snake_case`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cycles => "cycles",
            Self::Facts => "facts",
            Self::JobTimeout => "job_timeout",
        }
    }
}

/// The kind of a diagnostic: an agent failure kind, or a job-level event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DiagnosticKind {
    /// See [`FailureKind::OutOfFuel`].
    OutOfFuel,
    /// See [`FailureKind::OutOfMemory`].
    OutOfMemory,
    /// See [`FailureKind::Deadline`].
    Deadline,
    /// See [`FailureKind::Trap`].
    Trap,
    /// See [`FailureKind::Refused`].
    Refused,
    /// See [`FailureKind::InvalidEffect`].
    InvalidEffect,
    /// An effect or proposal would have changed an existing fact.
    Conflict,
    /// An invariant did not hold.
    InvariantViolated,
}

impl From<FailureKind> for DiagnosticKind {
    fn from(kind: FailureKind) -> Self {
        match kind {
            FailureKind::OutOfFuel => Self::OutOfFuel,
            FailureKind::OutOfMemory => Self::OutOfMemory,
            FailureKind::Deadline => Self::Deadline,
            FailureKind::Trap => Self::Trap,
            FailureKind::Refused => Self::Refused,
            FailureKind::InvalidEffect => Self::InvalidEffect,
        }
    }
}

/// A version of a fact in a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The agent that wrote (or tried to write) it.
    pub agent: String,
    /// The cycle.
    pub cycle: u32,
    /// The content.
    pub content: String,
}

/// Both sides of a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictDetail {
    /// The key of the fact.
    pub key: String,
    /// The id of the fact.
    pub id: String,
    /// What the context holds.
    pub existing: Version,
    /// What was refused.
    pub incoming: Version,
}

/// One diagnostic record; the same JSON is the content of the fact `diagnostics/<agent>@<cycle>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The agent or invariant concerned.
    pub agent: String,
    /// The cycle.
    pub cycle: u32,
    /// What happened.
    pub kind: DiagnosticKind,
    /// Details for humans.
    pub message: String,
    /// Both versions, for a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ConflictDetail>,
}

/// A fact of the result, with provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactRecord {
    /// Namespace.
    pub key: String,
    /// Identity within the key.
    pub id: String,
    /// Content.
    pub content: String,
    /// Writer.
    pub agent: String,
    /// Cycle of insertion (0 for seeds).
    pub cycle: u32,
}

/// A question waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenQuestion {
    /// Id; the answer becomes `answers/<id>`.
    pub id: String,
    /// What is asked.
    pub prompt: String,
    /// Who asked.
    pub agent: String,
}

/// The `error` of a result that did not converge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Same as the status, or the budget reason.
    pub kind: String,
    /// What ended the job.
    pub message: String,
}

/// Use of one agent over the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Fuel consumed.
    pub fuel: u64,
}

/// Resource use of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Agent calls, all agents.
    pub agent_calls: u64,
    /// Fuel, all agents.
    pub fuel: u64,
    /// Per agent, by name.
    pub agents: BTreeMap<String, AgentStats>,
    /// Wall time, filled in by the host (the engine reads no clock).
    pub wall_time_ms: u64,
}

/// The result of a job (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Assigned by the host.
    pub id: String,
    /// Where the job stands.
    pub status: Status,
    /// Which budget ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Cycles run.
    pub cycles: u32,
    /// The context, ordered by key then id.
    pub facts: Vec<FactRecord>,
    /// Questions without an answer, by id.
    pub open_questions: Vec<OpenQuestion>,
    /// Every diagnostic, in the order recorded.
    pub diagnostics: Vec<Diagnostic>,
    /// SHA-256 of the canonical context, lowercase hex.
    pub context_hash: String,
    /// False when a wall-clock limit fired.
    pub deterministic: bool,
    /// Resource use.
    pub stats: Stats,
    /// Why the job did not converge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// How one agent call ended, as the trace records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The effect was applied.
    Applied,
    /// The call failed; see the kind.
    Failed(FailureKind),
    /// The effect would have changed a fact.
    Conflict,
    /// The effect would have exceeded `max_facts`.
    OverBudget,
    /// The job ended before this effect was reached.
    Skipped,
}

/// One agent call in a cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTrace {
    /// The agent.
    pub agent: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Fuel used.
    pub fuel: u64,
    /// Facts of the effect inserted.
    pub inserted: u64,
    /// Facts of the effect already present, identical.
    pub duplicates: u64,
    /// Facts of the effect not applied (failure, conflict, budget).
    pub rejected: u64,
    /// Failure message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Peak memory of the call, in bytes (0 for native agents).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory: u64,
    /// Log lines and captured output of the call, capped by the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // the signature serde's `skip_serializing_if` calls
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A proposal decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalTrace {
    /// The proposing agent.
    pub agent: String,
    /// Key of the proposed fact.
    pub key: String,
    /// Id of the proposed fact.
    pub id: String,
    /// Its confidence.
    pub confidence: f64,
}

/// One invariant check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantTrace {
    /// The invariant.
    pub name: String,
    /// Its class.
    pub class: InvariantClass,
    /// Whether it held.
    pub held: bool,
    /// The violation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Everything one cycle did: the audit trail of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleTrace {
    /// The cycle, 1-based.
    pub cycle: u32,
    /// Answers applied just before the cycle, by question id.
    pub answers: Vec<String>,
    /// Agents that ran, by name.
    pub eligible: Vec<String>,
    /// Each call, by agent name.
    pub agents: Vec<AgentTrace>,
    /// Facts inserted, diagnostics and promoted proposals included.
    pub inserted: u64,
    /// Facts emitted that were already present.
    pub duplicates: u64,
    /// Facts emitted but not applied.
    pub rejected: u64,
    /// Proposals promoted into the context.
    pub promoted: Vec<ProposalTrace>,
    /// Proposals below `min_confidence`.
    pub rejected_proposals: Vec<ProposalTrace>,
    /// Questions opened, by id.
    pub questions: Vec<String>,
    /// Invariant checks after the merge.
    pub invariants: Vec<InvariantTrace>,
    /// Status after the cycle.
    pub status: Status,
}
