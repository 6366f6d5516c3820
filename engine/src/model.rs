//! The values agents and invariants exchange with the engine: facts, effects, declarations and failures.
//!
//! These mirror the WIT records of `converge:agent/types` one to one, so a host converts without thought.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A fact: identity `(key, id)`, immutable `content`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Fact {
    /// Namespace, `[a-z0-9._/-]{1,128}`.
    pub key: String,
    /// Identity within the key.
    pub id: String,
    /// UTF-8 text, usually JSON.
    pub content: String,
}

impl Fact {
    /// A fact from its three parts.
    pub fn new(key: impl Into<String>, id: impl Into<String>, content: impl Into<String>) -> Self {
        Self { key: key.into(), id: id.into(), content: content.into() }
    }
}

/// A fact that enters the context only if its confidence reaches the job's `min_confidence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Proposal {
    /// The fact proposed.
    pub fact: Fact,
    /// In `[0, 1]`; NaN or out of range makes the whole effect invalid.
    pub confidence: f64,
    /// Why the agent believes it.
    pub rationale: String,
}

/// A request for human input; its answer becomes the fact `answers/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Question {
    /// Becomes the id of the answer fact.
    pub id: String,
    /// What the human is asked.
    pub prompt: String,
}

/// What one agent execution returns. Applied whole or not at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Effect {
    /// Facts to insert.
    pub facts: Vec<Fact>,
    /// Facts to insert if confident enough.
    pub proposals: Vec<Proposal>,
    /// Questions to open.
    pub questions: Vec<Question>,
}

impl Effect {
    /// Whether the effect carries nothing.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty() && self.proposals.is_empty() && self.questions.is_empty()
    }
}

/// What an agent declares about itself, once, when it is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentInfo {
    /// Unique among loaded agents and invariants.
    pub name: String,
    /// For humans.
    pub description: String,
    /// Keys whose new facts make the agent eligible.
    pub reads: Vec<String>,
    /// The only keys the agent may emit facts or proposals under.
    pub writes: Vec<String>,
    /// Tools the agent may call.
    pub tools: Vec<String>,
    /// A failure of a required agent fails the job.
    pub required: bool,
}

/// When an invariant runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvariantClass {
    /// After every cycle's merge, first.
    Structural,
    /// After every cycle's merge, when the structural ones hold.
    Semantic,
    /// At the fixed point only.
    Acceptance,
}

impl fmt::Display for InvariantClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Structural => "structural",
            Self::Semantic => "semantic",
            Self::Acceptance => "acceptance",
        })
    }
}

/// What an invariant declares about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvariantInfo {
    /// Unique among loaded agents and invariants.
    pub name: String,
    /// For humans.
    pub description: String,
    /// When it runs.
    pub class: InvariantClass,
}

/// Why an execution produced no usable effect (SPEC §2 rule 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The call used all its fuel.
    OutOfFuel,
    /// A memory or table grow was refused by the limiter.
    OutOfMemory,
    /// The wall-clock backstop fired (makes the result non-deterministic).
    Deadline,
    /// The guest trapped (a panic, `unreachable`, a bad access...).
    Trap,
    /// The guest returned `err(..)`.
    Refused,
    /// The effect broke a rule of SPEC §2 rule 4.
    InvalidEffect,
}

impl FailureKind {
    /// The SPEC name, `snake_case`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfFuel => "out_of_fuel",
            Self::OutOfMemory => "out_of_memory",
            Self::Deadline => "deadline",
            Self::Trap => "trap",
            Self::Refused => "refused",
            Self::InvalidEffect => "invalid_effect",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed execution: its kind and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// The guest returned `err(message)`.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Refused, message)
    }

    /// The guest trapped.
    pub fn trap(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Trap, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}
