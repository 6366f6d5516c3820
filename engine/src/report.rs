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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub conflict: Option<ConflictDetail>,
}

/// A fact of the result, with provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    /// Same as the status, or the budget reason.
    pub kind: String,
    /// What ended the job.
    pub message: String,
}

/// Use of one agent over the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    /// Agent calls, all agents.
    pub agent_calls: u64,
    /// Fuel, all agents.
    pub fuel: u64,
    /// Per agent, by name.
    pub agents: BTreeMap<String, AgentStats>,
    /// Wall time, filled in by the host (the engine reads no clock).
    pub wall_time_ms: u64,
    /// Tool invocations made by agents, all tools, every outcome.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_calls: u64,
    /// Fuel the tools used (counted apart from the agents' `fuel`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_fuel: u64,
    /// Per tool, by the name agents called it by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ToolStats>,
}

/// Use of one tool over the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolStats {
    /// Invocations, every outcome.
    pub calls: u64,
    /// Invocations that did not return `ok`.
    pub failures: u64,
    /// Fuel the tool used.
    pub fuel: u64,
}

/// How one tool invocation ended (the `tool-error` variants of the WIT contract, and `ok`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    /// The tool returned a value.
    Ok,
    /// The tool is not in the calling agent's `tools`.
    Denied,
    /// No tool of that name is installed or accepted.
    Unknown,
    /// The tool trapped, ran out of a limit, returned `err` or an output over the cap.
    Failed,
    /// The tool's circuit is open after consecutive failures in this job.
    Unavailable,
}

impl ToolOutcome {
    /// The name serde gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Unknown => "unknown",
            Self::Failed => "failed",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One tool invocation, as the trace records it: enough to check a replay (tool digest, input digest, output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCall {
    /// The name the agent called.
    pub tool: String,
    /// SHA-256 of the tool's component, when the name resolved to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub digest: Option<String>,
    /// SHA-256 of the input, lowercase hex.
    pub input_sha256: String,
    /// How it ended.
    pub outcome: ToolOutcome,
    /// The output (`ok`) or the error message (every other outcome).
    pub output: String,
    /// Fuel the tool used (0 when it did not run).
    pub fuel: u64,
    /// Peak memory of the tool's instance, in bytes.
    pub memory: u64,
    /// Wall time of the invocation in microseconds; varies from run to run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub time_us: u64,
}

/// The result of a job (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobResult {
    /// Assigned by the host.
    pub id: String,
    /// Where the job stands.
    pub status: Status,
    /// Which budget ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
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
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub error: Option<ErrorInfo>,
}

impl JobResult {
    /// The result of a job that has not run a cycle: queued, or ended before it could start (`error` says why).
    pub fn empty(id: &str, status: Status, error: Option<ErrorInfo>) -> Self {
        Self {
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
}

/// How one agent call ended, as the trace records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub message: Option<String>,
    /// Peak memory of the call, in bytes (0 for native agents).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory: u64,
    /// Log lines and captured output of the call, capped by the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// Wall time of the call in microseconds, measured by the host (0 when not measured, as for native
    /// agents). It varies from run to run and is not part of `context_hash`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub time_us: u64,
    /// The tools the call invoked, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolCall>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // the signature serde's `skip_serializing_if` calls
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A proposal decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvariantTrace {
    /// The invariant.
    pub name: String,
    /// Its class.
    pub class: InvariantClass,
    /// Whether it held.
    pub held: bool,
    /// The violation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub message: Option<String>,
}

/// Everything one cycle did: the audit trail of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg(all(test, feature = "openapi"))]
mod tests {
    use super::*;
    use crate::{Fact, JobSpec};
    use serde_json::{Map, Value, json};
    use std::collections::BTreeSet;
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(components(schemas(JobSpec, JobResult, CycleTrace)))]
    struct Doc;

    /// Checks `value` against `schema`, for the keywords utoipa emits. An object with `properties` must have
    /// exactly those keys, so a sample that fills every optional field also catches a property serde never
    /// emits.
    fn check(schemas: &Map<String, Value>, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        if let Some(name) = schema["$ref"].as_str() {
            let name = name.trim_start_matches("#/components/schemas/");
            return check(schemas, &schemas[name], value, at);
        }
        if let Some(branches) = schema["oneOf"].as_array() {
            let fits = branches.iter().filter(|b| check(schemas, b, value, at).is_ok()).count();
            return if fits == 1 { Ok(()) } else { Err(format!("{at}: {value} fits {fits} branches of {schema}")) };
        }
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: no type in {schema}")),
        };
        let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
        if !fits {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(schemas, &schema["items"], item, &format!("{at}[{i}]"))?;
                }
            }
            Value::Object(fields) => {
                if let Some(properties) = schema["properties"].as_object() {
                    let emitted: BTreeSet<&String> = fields.keys().collect();
                    let declared: BTreeSet<&String> = properties.keys().collect();
                    if emitted != declared {
                        return Err(format!("{at}: serde emits {emitted:?}, the schema declares {declared:?}"));
                    }
                    for (k, v) in fields {
                        check(schemas, &properties[k], v, &format!("{at}.{k}"))?;
                    }
                } else {
                    for (k, v) in fields {
                        check(schemas, &schema["additionalProperties"], v, &format!("{at}.{k}"))?;
                    }
                }
                for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        return Err(format!("{at}: required {name} is missing"));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    #[test]
    fn tool_outcome_names_are_serdes() {
        use ToolOutcome::{Denied, Failed, Ok, Unavailable, Unknown};
        for outcome in [Ok, Denied, Unknown, Failed, Unavailable] {
            assert_eq!(serde_json::to_value(outcome).unwrap(), json!(outcome.as_str()));
        }
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one literal of every record
    fn schemas_describe_what_serde_emits() {
        let doc = serde_json::to_value(Doc::openapi()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (name, property) in [
            ("JobResult", "context_hash"),
            ("JobResult", "open_questions"),
            ("AgentTrace", "time_us"),
            ("AgentTrace", "outcome"),
            ("CycleTrace", "rejected_proposals"),
            ("Budget", "fuel_per_call"),
        ] {
            assert!(schemas[name]["properties"].get(property).is_some(), "{name}.{property}");
        }
        assert!(!schemas["JobResult"]["required"].as_array().unwrap().contains(&json!("error")));
        assert_eq!(schemas["JobSpec"]["properties"]["min_confidence"]["default"], json!(0.5));

        let version = |agent: &str| Version { agent: agent.into(), cycle: 1, content: "x".into() };
        let result = JobResult {
            id: "j".into(),
            status: Status::BudgetExhausted,
            reason: Some(Reason::Cycles),
            cycles: 1,
            facts: vec![FactRecord {
                key: "k".into(),
                id: "i".into(),
                content: "c".into(),
                agent: "a".into(),
                cycle: 0,
            }],
            open_questions: vec![OpenQuestion { id: "q".into(), prompt: "p".into(), agent: "a".into() }],
            diagnostics: vec![Diagnostic {
                agent: "b".into(),
                cycle: 1,
                kind: DiagnosticKind::Conflict,
                message: "m".into(),
                conflict: Some(ConflictDetail {
                    key: "k".into(),
                    id: "i".into(),
                    existing: version("a"),
                    incoming: version("b"),
                }),
            }],
            context_hash: "00".into(),
            deterministic: true,
            stats: Stats {
                agent_calls: 2,
                fuel: 3,
                agents: BTreeMap::from([("a".into(), AgentStats { calls: 2, failures: 1, fuel: 3 })]),
                wall_time_ms: 4,
                tool_calls: 1,
                tool_fuel: 5,
                tools: BTreeMap::from([("t".into(), ToolStats { calls: 1, failures: 0, fuel: 5 })]),
            },
            error: Some(ErrorInfo { kind: "cycles".into(), message: "m".into() }),
        };
        let call = |outcome| AgentTrace {
            agent: "a".into(),
            outcome,
            fuel: 1,
            inserted: 0,
            duplicates: 0,
            rejected: 1,
            message: Some("m".into()),
            memory: 65_536,
            logs: vec!["l".into()],
            time_us: 12,
            tools: vec![ToolCall {
                tool: "t".into(),
                digest: Some("ab".into()),
                input_sha256: "cd".into(),
                outcome: ToolOutcome::Ok,
                output: "o".into(),
                fuel: 5,
                memory: 65_536,
                time_us: 3,
            }],
        };
        let proposal = ProposalTrace { agent: "a".into(), key: "k".into(), id: "i".into(), confidence: 0.25 };
        let trace = CycleTrace {
            cycle: 1,
            answers: vec!["q".into()],
            eligible: vec!["a".into()],
            agents: vec![
                call(Outcome::Applied),
                call(Outcome::Failed(FailureKind::OutOfFuel)),
                call(Outcome::OverBudget),
            ],
            inserted: 1,
            duplicates: 0,
            rejected: 1,
            promoted: vec![proposal.clone()],
            rejected_proposals: vec![proposal],
            questions: vec!["q".into()],
            invariants: vec![InvariantTrace {
                name: "inv".into(),
                class: InvariantClass::Semantic,
                held: false,
                message: Some("m".into()),
            }],
            status: Status::Running,
        };
        let mut spec = JobSpec::new("g");
        spec.agents = Some(vec!["a".into()]);
        spec.invariants = vec!["inv".into()];
        spec.facts = vec![Fact::new("k", "i", "c")];
        spec.labels = BTreeMap::from([("team".into(), "x".into())]);

        let samples = [
            ("JobResult", serde_json::to_value(&result).unwrap()),
            ("CycleTrace", serde_json::to_value(&trace).unwrap()),
            ("JobSpec", serde_json::to_value(&spec).unwrap()),
        ];
        for (name, value) in samples {
            check(schemas, &schemas[name], &value, name).unwrap();
        }
        assert_eq!(serde_json::to_value(Outcome::Failed(FailureKind::Trap)).unwrap(), json!({"failed": "trap"}));
    }
}
