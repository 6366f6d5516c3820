//! The job spec of SPEC §4: what a client submits, checked before anything runs.
//!
//! Parsing rejects unknown fields and names the path of the first bad field; [`JobSpec::validate`] then
//! checks ranges and well-formedness and names the field it rejects (`facts[3].key`, `budget.max_cycles`).

use crate::model::Fact;
use crate::names::{self, shown};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// A job: a goal plus seed facts, the agents and invariants to run, and budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// What the job is for; agents read it through the view.
    pub goal: String,
    /// Agents to run, by name; when absent (or null), every loaded agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    /// Invariants to check, by name.
    #[serde(default)]
    pub invariants: Vec<String>,
    /// Seed facts, inserted before cycle 1 with provenance `seed@0`.
    #[serde(default)]
    pub facts: Vec<Fact>,
    /// Limits.
    #[serde(default)]
    pub budget: Budget,
    /// Proposals below this confidence are rejected.
    #[serde(default = "default_min_confidence")]
    #[cfg_attr(feature = "openapi", schema(default = default_min_confidence, minimum = 0.0, maximum = 1.0))]
    pub min_confidence: f64,
    /// Free-form labels for the client (not seen by agents).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_min_confidence() -> f64 {
    0.5
}

/// The limits of one job (SPEC §2 rule 11). The engine enforces `max_cycles`, `max_facts` and
/// `max_fact_bytes`; the host enforces the per-call ones and the job timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Most cycles the job may run.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    pub max_cycles: u32,
    /// Most facts in the context, seeds and diagnostics included.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    pub max_facts: u64,
    /// Largest content of one fact, proposal rationale or question prompt, in bytes.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    pub max_fact_bytes: u64,
    /// Fuel for each agent call.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    pub fuel_per_call: u64,
    /// Memory for each agent instance, in MiB, every memory of the component counted.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    pub memory_mb: u32,
    /// Wall-clock backstop of one call.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    pub call_timeout_ms: u64,
    /// Wall-clock limit of the whole job.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    pub job_timeout_ms: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_cycles: 100,
            max_facts: 10_000,
            max_fact_bytes: 64 * 1024,
            fuel_per_call: 1_000_000_000,
            memory_mb: 64,
            call_timeout_ms: 5_000,
            job_timeout_ms: 60_000,
        }
    }
}

/// Accepted ranges, inclusive.
const MAX_CYCLES: (u64, u64) = (1, 100_000);
const MAX_FACTS: (u64, u64) = (1, 10_000_000);
const MAX_FACT_BYTES: (u64, u64) = (1, 16 * 1024 * 1024);
const FUEL: (u64, u64) = (1, 1_000_000_000_000);
const MEMORY_MB: (u64, u64) = (1, 4096);
const CALL_TIMEOUT_MS: (u64, u64) = (1, 600_000);
const JOB_TIMEOUT_MS: (u64, u64) = (1, 86_400_000);
const MAX_GOAL_BYTES: usize = 64 * 1024;
const MAX_LABELS: usize = 64;
const MAX_LABEL_VALUE: usize = 256;

/// A job spec that cannot run, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Path of the field, like `facts[2].key` or `budget.max_cycles`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl JobSpec {
    /// A spec with only a goal; everything else takes its default.
    pub fn new(goal: impl Into<String>) -> Self {
        Self {
            goal: goal.into(),
            agents: None,
            invariants: Vec::new(),
            facts: Vec::new(),
            budget: Budget::default(),
            min_confidence: default_min_confidence(),
            labels: BTreeMap::new(),
        }
    }

    /// Parse and validate a spec from JSON.
    ///
    /// # Errors
    /// A [`SpecError`] naming the first field that is unknown, missing, mistyped or out of range.
    pub fn from_json(json: &str) -> Result<Self, SpecError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let spec: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            SpecError::new(field, e.into_inner().to_string())
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Check ranges and well-formedness.
    ///
    /// # Errors
    /// A [`SpecError`] naming the first field at fault.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.goal.trim().is_empty() {
            return Err(SpecError::new("goal", "must not be empty"));
        }
        if self.goal.len() > MAX_GOAL_BYTES {
            return Err(SpecError::new("goal", format!("is {} bytes, more than {MAX_GOAL_BYTES}", self.goal.len())));
        }
        self.budget.validate()?;
        if !self.min_confidence.is_finite() || !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(SpecError::new("min_confidence", "must be a number in [0, 1]"));
        }
        if let Some(agents) = &self.agents {
            check_names("agents", agents)?;
        }
        check_names("invariants", &self.invariants)?;
        if self.labels.len() > MAX_LABELS {
            return Err(SpecError::new("labels", format!("has more than {MAX_LABELS} entries")));
        }
        for (k, v) in &self.labels {
            if names::check_key(k).is_err() || k.len() > 63 {
                return Err(SpecError::new(
                    format!("labels.{}", shown(k)),
                    "label names are 1-63 characters of [a-z0-9._/-]",
                ));
            }
            if v.len() > MAX_LABEL_VALUE {
                return Err(SpecError::new(format!("labels.{k}"), format!("is longer than {MAX_LABEL_VALUE} bytes")));
            }
        }
        self.validate_facts()
    }

    fn validate_facts(&self) -> Result<(), SpecError> {
        if self.facts.len() as u64 > self.budget.max_facts {
            return Err(SpecError::new(
                "facts",
                format!("{} seed facts exceed budget.max_facts ({})", self.facts.len(), self.budget.max_facts),
            ));
        }
        let mut seen: BTreeMap<(&str, &str), (usize, &str)> = BTreeMap::new();
        for (i, f) in self.facts.iter().enumerate() {
            names::check_key(&f.key).map_err(|e| SpecError::new(format!("facts[{i}].key"), e.to_string()))?;
            if names::is_reserved_key(&f.key) {
                return Err(SpecError::new(format!("facts[{i}].key"), format!("key {} is reserved", shown(&f.key))));
            }
            names::check_id(&f.id).map_err(|e| SpecError::new(format!("facts[{i}].id"), e.to_string()))?;
            if f.content.len() as u64 > self.budget.max_fact_bytes {
                return Err(SpecError::new(
                    format!("facts[{i}].content"),
                    format!(
                        "is {} bytes, more than budget.max_fact_bytes ({})",
                        f.content.len(),
                        self.budget.max_fact_bytes
                    ),
                ));
            }
            if let Some((j, content)) = seen.insert((&f.key, &f.id), (i, &f.content))
                && content != f.content
            {
                return Err(SpecError::new(
                    format!("facts[{i}]"),
                    format!("({}, {}) is also facts[{j}] with different content", shown(&f.key), shown(&f.id)),
                ));
            }
        }
        Ok(())
    }
}

fn check_names(field: &str, list: &[String]) -> Result<(), SpecError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, name) in list.iter().enumerate() {
        names::check_name(name).map_err(|e| SpecError::new(format!("{field}[{i}]"), e.to_string()))?;
        if !seen.insert(name) {
            return Err(SpecError::new(format!("{field}[{i}]"), format!("{} is listed twice", shown(name))));
        }
    }
    Ok(())
}

impl Budget {
    /// Check every limit is within its accepted range.
    ///
    /// # Errors
    /// A [`SpecError`] naming `budget.<field>` and the range.
    pub fn validate(&self) -> Result<(), SpecError> {
        let fields: [(&str, u64, (u64, u64)); 7] = [
            ("max_cycles", u64::from(self.max_cycles), MAX_CYCLES),
            ("max_facts", self.max_facts, MAX_FACTS),
            ("max_fact_bytes", self.max_fact_bytes, MAX_FACT_BYTES),
            ("fuel_per_call", self.fuel_per_call, FUEL),
            ("memory_mb", u64::from(self.memory_mb), MEMORY_MB),
            ("call_timeout_ms", self.call_timeout_ms, CALL_TIMEOUT_MS),
            ("job_timeout_ms", self.job_timeout_ms, JOB_TIMEOUT_MS),
        ];
        for (name, value, (lo, hi)) in fields {
            if !(lo..=hi).contains(&value) {
                return Err(SpecError::new(format!("budget.{name}"), format!("{value} is outside {lo}..={hi}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_fields() {
        let spec = JobSpec::from_json(r#"{"goal":"g"}"#).unwrap();
        assert_eq!(spec.budget, Budget::default());
        assert!((spec.min_confidence - 0.5).abs() < f64::EPSILON);
        let cases = [
            (r#"{"goal":"g","bogus":1}"#, "bogus"),
            (r#"{"goal":"g","budget":{"max_cycles":0}}"#, "budget.max_cycles"),
            (r#"{"goal":"g","budget":{"nope":1}}"#, "budget.nope"),
            (r#"{"goal":"g","facts":[{"key":"A","id":"i","content":""}]}"#, "facts[0].key"),
            (r#"{"goal":"g","facts":[{"key":"answers","id":"i","content":""}]}"#, "facts[0].key"),
            (
                r#"{"goal":"g","facts":[{"key":"a","id":"i","content":"x"},{"key":"a","id":"i","content":"y"}]}"#,
                "facts[1]",
            ),
            (r#"{"goal":"g","min_confidence":2}"#, "min_confidence"),
            (r#"{"goal":"g","agents":["a","a"]}"#, "agents[1]"),
            (r#"{"agents":[]}"#, "body"),
            (r#"{"goal":" "}"#, "goal"),
            (r#"{"goal":"g","budget":{"max_cycles":"x"}}"#, "budget.max_cycles"),
        ];
        for (json, field) in cases {
            let err = JobSpec::from_json(json).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
        let err = JobSpec::from_json(r#"{"goal":"g","bogus":1}"#).unwrap_err();
        assert!(err.message.contains("bogus"), "{err}");
    }
}
