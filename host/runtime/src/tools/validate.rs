//! The validation pipeline for untrusted tools (SPEC §6): one implementation behind `converge validate-tool`
//! and `POST /v1/tools/validate`.
//!
//! size cap → header (a component, not a core module or garbage) → parse, validate and compile with the host's
//! engine, under a time bound (a disabled proposal is named here) → world (`converge:agent/tool`) → every import
//! listed, allowed or denied against the tool policy → link, type-check, `info()` → each test run twice in a
//! fresh sandbox under the tool's limits, outputs compared → a [`Report`].
//!
//! Nothing submitted is ever deserialized as precompiled code: the bytes must be a component, compiled here by
//! the same engine, with the same settings, that runs agents. The compiled code then goes to the host's own
//! cache, so making the tool callable later loads it instead of compiling it again.
//!
//! The verdict: `rejected` for any hard failure (each named in `reasons`); otherwise `needs_review` when the
//! tool asks for more than the default limits, requests capabilities, has fewer than [`MIN_TESTS`] tests, or
//! tried anything the sandbox refused during its tests (`attempts`); otherwise `accepted`.

use super::{InvokeError, MAX_OUTPUT, Source, Tool, invoke};
use crate::inspect::{Kind, check_header, import_allowed, world};
use converge_sandbox::{Cache, Component, Sandbox, clip};
use converge_store::tool::{MAX_TOOL_BYTES, MIN_TESTS};
use converge_store::{Expect, ImportCheck, Manifest, Report, TestReport, ToolLimits, Verdict};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a compile may take before the tool is rejected.
pub const COMPILE_TIMEOUT: Duration = Duration::from_mins(1);
/// Longest the tests of one tool may run together; tests not started by then are not run, and the tool is
/// rejected.
pub const TESTS_TIMEOUT: Duration = Duration::from_mins(2);

/// A report, and the tool ready to call when the verdict is not `rejected`.
#[derive(Debug)]
pub struct Validated {
    /// The report.
    pub report: Report,
    /// The compiled tool (validated source, the manifest's limits); `None` when rejected.
    pub tool: Option<Tool>,
}

/// Validate `bytes` as the tool `manifest` describes. The compiled code of a tool that may become callable goes
/// to `cache`, when given.
pub fn validate(sandbox: &Arc<Sandbox>, cache: Option<&Cache>, bytes: &[u8], manifest: &Manifest) -> Validated {
    let limits = manifest.limits.unwrap_or_default();
    let mut report = Report {
        verdict: Verdict::Rejected,
        reasons: Vec::new(),
        name: manifest.name.clone(),
        description: manifest.description.clone(),
        digest: converge_engine::hex(&Sha256::digest(bytes)),
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
    if let Some(cache) = cache {
        cache.put(&tool.digest, tool.pre.component());
    }
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
    report.imports = sandbox
        .imports(&component)
        .into_iter()
        .map(|name| {
            let allowed = import_allowed(&name, Kind::Tool);
            ImportCheck { name, allowed }
        })
        .collect();
    report.imports.sort_by(|a, b| a.name.cmp(&b.name));
    let denied: Vec<&str> = report.imports.iter().filter(|i| !i.allowed).map(|i| i.name.as_str()).collect();
    if !denied.is_empty() {
        return Err(format!(
            "imports {}, outside what the host serves to tools (WASI 0.2.x and converge:agent/log)",
            denied.join(", ")
        ));
    }
    let mut tool = Tool::link(sandbox, &component, &report.digest, Source::Validated, None, report.limits)
        .map_err(|why| format!("the component {why}"))?;
    if tool.name != manifest.name {
        return Err(format!(
            "the tool declares the name {} in info(), but the manifest names it {}",
            clip(&tool.name, 128),
            manifest.name
        ));
    }
    if !tool.description.is_empty() {
        clip(&tool.description, 4096).clone_into(&mut report.description);
    }
    tool.description.clone_from(&report.description);
    Ok(tool)
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
    let sandbox = Arc::clone(sandbox);
    let owned = bytes.to_vec();
    let thread = std::thread::Builder::new()
        .name("converge-validate-compile".into())
        .spawn(move || {
            let _ = tx.send(sandbox.compile(&owned));
        })
        .map_err(|e| format!("could not start compiling: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(component)) => Ok(component),
        Ok(Err(e)) => {
            Err(format!("the component is not valid under the host's WebAssembly features: {}", e.one_line()))
        }
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
        let limit_hit = first.result.as_ref().is_err_and(|e| !e.is_tool_err());
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
            Err(e) => (None, Some(e.to_string())),
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

fn describe(result: &Result<String, InvokeError>) -> String {
    match result {
        Ok(out) => format!("ok {:?}", clip(out, 64)),
        Err(e) => format!("error {:?}", clip(&e.to_string(), 64)),
    }
}

/// Why `result` does not meet `expect`, if it does not.
fn expectation(expect: &Expect, result: &Result<String, InvokeError>) -> Option<String> {
    match (expect, result) {
        (Expect::Ok(want), Ok(got)) if want == got => None,
        (Expect::Ok(want), Ok(got)) => {
            Some(format!("expected the output {:?}, got {:?}", clip(want, 64), clip(got, 64)))
        }
        (Expect::Contains(want), Ok(got)) if got.contains(want.as_str()) => None,
        (Expect::Contains(want), Ok(got)) => {
            Some(format!("expected an output containing {:?}, got {:?}", clip(want, 64), clip(got, 64)))
        }
        (Expect::Error(_), Err(e)) if e.is_tool_err() => None,
        (Expect::Error(_), Err(e)) => Some(format!("expected the tool to return an error, but the run failed: {e}")),
        (Expect::Error(_), Ok(got)) => Some(format!("expected an error, got the output {:?}", clip(got, 64))),
        (Expect::Ok(_) | Expect::Contains(_), Err(e)) => Some(format!("expected an output, got an error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::{ABANDONED, compile_within};
    use converge_sandbox::{Sandbox, SandboxConfig};
    use std::sync::Arc;
    use std::time::Duration;

    fn abandoned() -> bool {
        ABANDONED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    #[test]
    fn a_compile_past_its_bound_is_waited_for_before_the_next_one_starts() {
        let sandbox =
            Arc::new(Sandbox::new(SandboxConfig { instances: 1, pooling: false, ..SandboxConfig::default() }).unwrap());
        let (_, path) = converge_tests::GUESTS.iter().find(|(n, _)| *n == "tool-upper").unwrap();
        let bytes = std::fs::read(path).unwrap();
        let r = compile_within(&sandbox, &bytes, Duration::ZERO);
        assert!(r.as_ref().is_err_and(|e| e.contains("took longer")), "{:?}", r.map(drop));
        assert!(abandoned(), "the timed-out compile is kept to be waited for");
        assert!(compile_within(&sandbox, &bytes, Duration::from_mins(1)).is_ok());
        assert!(!abandoned(), "the next compile waited for it first");
    }
}
