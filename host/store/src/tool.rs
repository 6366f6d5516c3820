//! The JSON shapes of tool validation (SPEC §6): the manifest a submitter sends, the limits a tool runs under,
//! and the report the pipeline writes. The pipeline itself is the runtime's; these are what is stored and served.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Largest component accepted for validation.
pub const MAX_TOOL_BYTES: usize = 32 * 1024 * 1024;
/// Fewer tests than this make a tool `needs_review`.
pub const MIN_TESTS: usize = 3;
/// Most tests a manifest may hold.
pub const MAX_TESTS: usize = 64;
/// Longest input an agent may pass to a tool (and a test may give one), in bytes.
pub const MAX_INPUT: usize = 1024 * 1024;

/// The limits of one tool invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolLimits {
    /// Fuel per invocation.
    #[serde(deserialize_with = "converge_engine::whole::deserialize")]
    pub fuel: u64,
    /// Linear memory per invocation, in MiB.
    #[serde(deserialize_with = "converge_engine::whole::deserialize")]
    pub memory_mb: u32,
    /// Wall-clock backstop per invocation, in milliseconds.
    #[serde(deserialize_with = "converge_engine::whole::deserialize")]
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
}

/// What the submitter says about a tool: its name, tests, requested capabilities and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The name the tool must declare in `info()`.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Example invocations and what they must give.
    pub tests: Vec<TestCase>,
    /// Capabilities the tool asks for (the sandbox grants none; any makes the tool `needs_review`).
    #[serde(default)]
    pub requested: Vec<String>,
    /// Limits per invocation, when it needs more than the defaults (which makes it `needs_review`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ToolLimits>,
}

/// One test of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Unique within the manifest.
    pub name: String,
    /// The input given to `invoke`.
    pub input: String,
    /// What must come back.
    pub expect: Expect,
}

/// What a test expects: `{"ok": "<exact output>"}`, `{"contains": "<substring>"}` or `{"error": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expect {
    /// The output, exactly.
    Ok(String),
    /// An `ok` output containing this.
    Contains(String),
    /// The tool must return `err` (a trap or a limit is not an `err`).
    Error(bool),
}

/// The manifest cannot be used: unusable input, not a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest: {0}")]
pub struct ManifestError(pub String);

impl Manifest {
    /// Parse and check a manifest.
    ///
    /// # Errors
    /// Malformed JSON, an unknown field, or a value out of range, named.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let manifest: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." { ManifestError(inner.to_string()) } else { ManifestError(format!("{path}: {inner}")) }
        })?;
        de.end().map_err(|e| ManifestError(e.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let bad = |m: String| Err(ManifestError(m));
        converge_engine::names::check_name(&self.name).map_err(|e| ManifestError(format!("name: {e}")))?;
        if self.description.len() > 4096 {
            return bad("description: longer than 4096 bytes".into());
        }
        if self.tests.len() > MAX_TESTS {
            return bad(format!("tests: {} tests, more than the {MAX_TESTS} allowed", self.tests.len()));
        }
        let mut names = BTreeSet::new();
        for (i, t) in self.tests.iter().enumerate() {
            if t.name.is_empty() || t.name.len() > 128 {
                return bad(format!("tests[{i}].name: must be 1 to 128 bytes"));
            }
            if !names.insert(t.name.as_str()) {
                return bad(format!("tests[{i}].name: {} appears twice", t.name));
            }
            if t.input.len() > MAX_INPUT {
                return bad(format!("tests[{i}].input: longer than {MAX_INPUT} bytes"));
            }
            if t.expect == Expect::Error(false) {
                return bad(format!("tests[{i}].expect: {{\"error\": false}} expects nothing; use ok or contains"));
            }
        }
        if self.requested.len() > 32 || self.requested.iter().any(|r| r.is_empty() || r.len() > 128) {
            return bad("requested: at most 32 capabilities, each 1 to 128 bytes".into());
        }
        if let Some(l) = &self.limits {
            let max = ToolLimits::MAX;
            for (field, value, most) in [
                ("fuel", l.fuel, max.fuel),
                ("memory_mb", u64::from(l.memory_mb), u64::from(max.memory_mb)),
                ("timeout_ms", l.timeout_ms, max.timeout_ms),
            ] {
                if value == 0 || value > most {
                    return bad(format!("limits.{field}: {value} is outside 1..={most}"));
                }
            }
        }
        Ok(())
    }
}

/// The verdict of a validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Callable now.
    Accepted,
    /// Waits for a human decision (`POST /v1/tools/{id}/review`).
    NeedsReview,
    /// Never callable.
    Rejected,
}

impl Verdict {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::NeedsReview => "needs_review",
            Self::Rejected => "rejected",
        }
    }
}

/// One import of the component and whether the tool policy allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportCheck {
    /// The import's name, e.g. `wasi:cli/environment@0.2.6`.
    pub name: String,
    /// Whether the host serves it to tools.
    pub allowed: bool,
}

/// One test's result: the first of its two runs, and whether both agreed and met the expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestReport {
    /// The test's name.
    pub name: String,
    /// Whether it met its expectation, the same way on both runs.
    pub passed: bool,
    /// The `ok` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The `err` message, or why the run failed (trap, limit, output over the cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fuel used by the first run.
    pub fuel: u64,
    /// Peak linear memory of the first run, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall time of the first run, in microseconds.
    pub time_us: u64,
}

/// The report of one validation (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// Sentences naming each cause of the verdict (empty when accepted).
    pub reasons: Vec<String>,
    /// The manifest's name.
    pub name: String,
    /// What `info()` declared, else the manifest's description.
    pub description: String,
    /// SHA-256 of the component bytes, lowercase hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Every import, allowed or not (empty when the bytes could not be parsed).
    pub imports: Vec<ImportCheck>,
    /// What the tool tried during its tests and the sandbox refused.
    pub attempts: Vec<String>,
    /// Each test, in manifest order.
    pub tests: Vec<TestReport>,
    /// The limits each invocation gets.
    pub limits: ToolLimits,
    /// Capabilities the manifest requested.
    pub requested: Vec<String>,
}
