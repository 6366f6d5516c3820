//! The validation pipeline for untrusted tools (SPEC §6): one implementation behind `converge validate-tool`
//! and `POST /v1/tools/validate`.
//!
//! size cap → header (a component, not a core module or garbage) → parse, validate and compile with the host's
//! engine, under a time bound (a disabled proposal is named here) → world (`converge:agent/tool`) → every import
//! listed, allowed or denied against the tool policy → link, type-check, `info()` → each test run twice in a
//! fresh sandbox under the tool's limits, outputs compared → a [`Report`].
//!
//! Nothing submitted is ever deserialized as precompiled code: the bytes must be a component, compiled here by
//! the same engine, with the same settings, that runs agents.
//!
//! The verdict: `rejected` for any hard failure (each named in `reasons`); otherwise `needs_review` when the
//! tool asks for more than the default limits, requests capabilities, has fewer than [`MIN_TESTS`] tests, or
//! tried anything the sandbox refused during its tests (`attempts`); otherwise `accepted`.

use super::{MAX_INPUT, MAX_OUTPUT, Source, Tool, ToolLimits, invoke};
use crate::registry::{Kind, check_header, check_tool_name, import_allowed, world};
use crate::sandbox::{Sandbox, clip};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Component;

/// Largest component accepted for validation.
pub const MAX_TOOL_BYTES: usize = 32 * 1024 * 1024;
/// Fewer tests than this make a tool `needs_review`.
pub const MIN_TESTS: usize = 3;
/// Most tests a manifest may hold.
pub const MAX_TESTS: usize = 64;
/// Longest a compile may take before the tool is rejected.
pub const COMPILE_TIMEOUT: Duration = Duration::from_mins(1);
/// Longest the tests of one tool may run together; tests not started by then are not run, and the tool is
/// rejected.
pub const TESTS_TIMEOUT: Duration = Duration::from_mins(2);

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
        check_tool_name(&self.name).map_err(|e| ManifestError(format!("name: {e}")))?;
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

/// A report, and the tool ready to call when the verdict is not `rejected`.
#[derive(Debug)]
pub struct Validated {
    /// The report.
    pub report: Report,
    /// The compiled tool (validated source, the manifest's limits); `None` when rejected.
    pub tool: Option<Tool>,
}

/// Validate `bytes` as the tool `manifest` describes.
pub fn validate(sandbox: &Arc<Sandbox>, bytes: &[u8], manifest: &Manifest) -> Validated {
    let limits = manifest.limits.unwrap_or_default();
    let mut report = Report {
        verdict: Verdict::Rejected,
        reasons: Vec::new(),
        name: manifest.name.clone(),
        description: manifest.description.clone(),
        digest: crate::hex(&Sha256::digest(bytes)),
        size: bytes.len() as u64,
        imports: Vec::new(),
        attempts: Vec::new(),
        tests: Vec::new(),
        limits,
        requested: manifest.requested.clone(),
    };
    let tool = match build(sandbox, bytes, manifest, &mut report) {
        Ok(tool) => tool,
        Err(reason) => {
            report.reasons.push(reason);
            return Validated { report, tool: None };
        }
    };
    run_tests(sandbox, &tool, manifest, &mut report);
    let mut hard = !report.reasons.is_empty();
    if let Some(failed) = report.tests.iter().find(|t| !t.passed) {
        let n = report.tests.iter().filter(|t| !t.passed).count();
        report.reasons.push(format!(
            "{n} of {} tests failed, the first {}: {}",
            report.tests.len(),
            failed.name,
            failed.reason.as_deref().unwrap_or("failed")
        ));
        hard = true;
    }
    if hard {
        return Validated { report, tool: None };
    }
    if limits.exceeds(&ToolLimits::default()) {
        let d = ToolLimits::default();
        report.reasons.push(format!(
            "asks for more than the default tool limits (fuel {} / {}, memory {} / {} MiB, timeout {} / {} ms)",
            limits.fuel, d.fuel, limits.memory_mb, d.memory_mb, limits.timeout_ms, d.timeout_ms
        ));
    }
    if !manifest.requested.is_empty() {
        report
            .reasons
            .push(format!("requests capabilities the sandbox does not grant: {}", manifest.requested.join(", ")));
    }
    if manifest.tests.len() < MIN_TESTS {
        report.reasons.push(format!(
            "has {} tests; fewer than {MIN_TESTS} say too little about what it does",
            manifest.tests.len()
        ));
    }
    if !report.attempts.is_empty() {
        report.reasons.push(format!(
            "tried {} thing(s) the sandbox refused during its tests (see attempts), the first: {}",
            report.attempts.len(),
            report.attempts[0]
        ));
    }
    report.verdict = if report.reasons.is_empty() { Verdict::Accepted } else { Verdict::NeedsReview };
    Validated { report, tool: Some(tool) }
}

/// Every step before the tests; the first hard failure, as a sentence.
fn build(sandbox: &Arc<Sandbox>, bytes: &[u8], manifest: &Manifest, report: &mut Report) -> Result<Tool, String> {
    if bytes.len() > MAX_TOOL_BYTES {
        return Err(format!("the component is {} bytes, over the cap of {MAX_TOOL_BYTES} bytes", bytes.len()));
    }
    check_header(bytes).map_err(|why| format!("the submission {why}"))?;
    let component = compile(sandbox, bytes)?;
    match world(sandbox, &component) {
        Ok(Kind::Tool) => {}
        Ok(kind) => {
            return Err(format!(
                "wrong world: the component exports world {}, not converge-tool (converge:agent/tool@0.1.0)",
                kind.world()
            ));
        }
        Err(why) => return Err(format!("wrong world: the component {why}")),
    }
    let ty = component.component_type();
    report.imports = ty
        .imports(sandbox.engine())
        .map(|(name, _)| ImportCheck { name: name.to_owned(), allowed: import_allowed(name, Kind::Tool) })
        .collect();
    report.imports.sort_by(|a, b| a.name.cmp(&b.name));
    let denied: Vec<&str> = report.imports.iter().filter(|i| !i.allowed).map(|i| i.name.as_str()).collect();
    if !denied.is_empty() {
        return Err(format!(
            "imports {}, outside what the host serves to tools (WASI 0.2.x and converge:agent/log)",
            denied.join(", ")
        ));
    }
    let (pre, info) = super::prepare(sandbox, &component).map_err(|why| format!("the component {why}"))?;
    if info.name != manifest.name {
        return Err(format!(
            "the tool declares the name {} in info(), but the manifest names it {}",
            clip(&info.name, 128),
            manifest.name
        ));
    }
    if !info.description.is_empty() {
        clip(&info.description, 4096).clone_into(&mut report.description);
    }
    Ok(Tool {
        name: info.name,
        description: report.description.clone(),
        digest: report.digest.clone(),
        source: Source::Validated,
        owner: None,
        limits: report.limits,
        pre,
    })
}

/// The compile thread of the last validation that stopped waiting for it, if it may still run. The next
/// validation waits for it to end before compiling, so abandoned compiles never pile up: at most one runs in the
/// background, however many slow components are submitted.
static ABANDONED: std::sync::Mutex<Option<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(None);

/// Compile on a thread of its own, so a component that takes too long to compile is rejected instead of holding
/// the caller (the thread finishes in the background; the size cap bounds its work).
fn compile(sandbox: &Arc<Sandbox>, bytes: &[u8]) -> Result<Component, String> {
    compile_within(sandbox, bytes, COMPILE_TIMEOUT)
}

fn compile_within(sandbox: &Arc<Sandbox>, bytes: &[u8], limit: Duration) -> Result<Component, String> {
    let earlier = ABANDONED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(thread) = earlier {
        let _ = thread.join();
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let engine = sandbox.engine().clone();
    let owned = bytes.to_vec();
    let thread = std::thread::Builder::new()
        .name("converge-validate-compile".into())
        .spawn(move || {
            let _ = tx.send(Component::new(&engine, &owned).map_err(|e| format!("{e:#}")));
        })
        .map_err(|e| format!("could not start compiling: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(component)) => Ok(component),
        Ok(Err(e)) => Err(format!(
            "the component is not valid under the host's WebAssembly features: {}",
            e.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(": ")
        )),
        Err(_) => {
            *ABANDONED.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread);
            Err(format!("compiling the component took longer than {} s", limit.as_secs()))
        }
    }
}

/// The seed of a test run: both runs of a test get the same, so a deterministic tool gives the same output.
fn test_seed(digest: &str, test: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"converge-validate-v1\0");
    h.update(digest.as_bytes());
    h.update(b"\0");
    h.update(test.as_bytes());
    h.finalize().into()
}

fn run_tests(sandbox: &Sandbox, tool: &Tool, manifest: &Manifest, report: &mut Report) {
    let start = Instant::now();
    for (i, test) in manifest.tests.iter().enumerate() {
        if start.elapsed() > TESTS_TIMEOUT {
            report.reasons.push(format!(
                "the tests ran past {} s; {} of {} were not run",
                TESTS_TIMEOUT.as_secs(),
                manifest.tests.len() - i,
                manifest.tests.len()
            ));
            return;
        }
        let seed = test_seed(&tool.digest, &test.name);
        let first = invoke(sandbox, tool, &test.input, seed);
        let mut attempts = first.attempts.clone();
        // A run that hit a limit is a failure already; running it again would only spend the limit twice.
        let limit_hit = first.result.as_ref().is_err_and(|e| is_limit(e));
        let reason = if limit_hit {
            None
        } else {
            let second = invoke(sandbox, tool, &test.input, seed);
            attempts.extend(second.attempts);
            (second.result != first.result).then(|| {
                format!(
                    "two runs gave different results ({} then {})",
                    describe(&first.result),
                    describe(&second.result)
                )
            })
        };
        for a in attempts {
            if !report.attempts.contains(&a) {
                report.attempts.push(a);
            }
        }
        let reason = reason.or_else(|| expectation(&test.expect, &first.result));
        let (output, error) = match &first.result {
            Ok(out) => (Some(clip(out, MAX_OUTPUT).to_owned()), None),
            Err(e) => (None, Some(e.clone())),
        };
        report.tests.push(TestReport {
            name: test.name.clone(),
            passed: reason.is_none(),
            output,
            error,
            reason,
            fuel: first.fuel,
            peak_memory_bytes: first.memory,
            time_us: first.time_us,
        });
    }
}

/// Whether an invocation error is a trap or a limit rather than the tool's own `err`.
fn is_limit(error: &str) -> bool {
    !error.starts_with(super::TOOL_ERR_PREFIX)
}

fn describe(result: &Result<String, String>) -> String {
    match result {
        Ok(out) => format!("ok {:?}", clip(out, 64)),
        Err(e) => format!("error {:?}", clip(e, 64)),
    }
}

/// Why `result` does not meet `expect`, if it does not.
fn expectation(expect: &Expect, result: &Result<String, String>) -> Option<String> {
    match (expect, result) {
        (Expect::Ok(want), Ok(got)) if want == got => None,
        (Expect::Ok(want), Ok(got)) => {
            Some(format!("expected the output {:?}, got {:?}", clip(want, 64), clip(got, 64)))
        }
        (Expect::Contains(want), Ok(got)) if got.contains(want.as_str()) => None,
        (Expect::Contains(want), Ok(got)) => {
            Some(format!("expected an output containing {:?}, got {:?}", clip(want, 64), clip(got, 64)))
        }
        (Expect::Error(_), Err(e)) if !is_limit(e) => None,
        (Expect::Error(_), Err(e)) => Some(format!("expected the tool to return an error, but the run failed: {e}")),
        (Expect::Error(_), Ok(got)) => Some(format!("expected an error, got the output {:?}", clip(got, 64))),
        (Expect::Ok(_) | Expect::Contains(_), Err(e)) => Some(format!("expected an output, got an error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::{ABANDONED, compile_within};
    use crate::{Sandbox, SandboxConfig};
    use std::sync::Arc;
    use std::time::Duration;

    fn abandoned() -> bool {
        ABANDONED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    #[test]
    fn a_compile_past_its_bound_is_waited_for_before_the_next_one_starts() {
        let sandbox = Arc::new(Sandbox::new(SandboxConfig { instances: 1, pooling: false }).unwrap());
        let (_, path) = converge_tests::GUESTS.iter().find(|(n, _)| *n == "tool-upper").unwrap();
        let bytes = std::fs::read(path).unwrap();
        let r = compile_within(&sandbox, &bytes, Duration::ZERO);
        assert!(r.as_ref().is_err_and(|e| e.contains("took longer")), "{:?}", r.map(drop));
        assert!(abandoned(), "the timed-out compile is kept to be waited for");
        assert!(compile_within(&sandbox, &bytes, Duration::from_mins(1)).is_ok());
        assert!(!abandoned(), "the next compile waited for it first");
    }
}
