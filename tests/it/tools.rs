//! Tools through the real host: agents calling them (outcomes, limits, the circuit, the trace), and the
//! validation pipeline on good and hostile tools (SPEC §6). Every hostile tool is a guest under `tests/guests/`.

use converge_engine::{CycleTrace, Job, JobResult, JobSpec, Status, ToolCall, ToolOutcome};
use converge_runtime::tools::validate;
use converge_runtime::{Catalog, Registry, roster};
use converge_sandbox::{Sandbox, SandboxConfig};
use converge_service::Deadline;
use converge_store::tool::MAX_TOOL_BYTES;
use converge_store::{Expect, Manifest, Report, TestCase};
use converge_store::{ToolLimits, Verdict};
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use converge_tests::GUESTS;

fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| {
        Arc::new(Sandbox::new(SandboxConfig { instances: 32, pooling: true, ..SandboxConfig::default() }).unwrap())
    }))
}

fn guest(name: &str) -> Vec<u8> {
    let path = GUESTS.iter().find(|(n, _)| *n == name).map_or_else(|| panic!("no guest {name}"), |(_, p)| *p);
    std::fs::read(path).unwrap()
}

/// An agents directory with the `tool-caller` probe agent, and a tools directory with `tools` (guest names).
fn catalog(test: &str, tools: &[&str]) -> Catalog {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join("tools").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    std::fs::create_dir_all(dir.join("tools")).unwrap();
    std::fs::write(dir.join("agents").join("tool-caller.wasm"), guest("tool-caller")).unwrap();
    for t in tools {
        std::fs::write(dir.join("tools").join(format!("{t}.wasm")), guest(t)).unwrap();
    }
    let catalog = Registry::new(sandbox(), dir.join("agents"), Some(root.join("component-cache")))
        .with_tools(Some(dir.join("tools")))
        .refresh()
        .unwrap();
    assert!(catalog.rejected.is_empty() && catalog.rejected_tools.is_empty(), "{catalog:?}");
    catalog
}

/// A job whose seed facts are `calls/<id>` = `TOOL\nINPUT`, for the `tool-caller` agent.
fn job(calls: &[(&str, &str, &str)]) -> String {
    let facts: Vec<_> = calls
        .iter()
        .map(|(id, tool, input)| json!({"key": "calls", "id": id, "content": format!("{tool}\n{input}")}))
        .collect();
    json!({"goal": "call tools", "facts": facts}).to_string()
}

fn run(catalog: &Catalog, json: &str, threads: usize) -> (JobResult, Vec<CycleTrace>) {
    let spec = JobSpec::from_json(json).unwrap();
    let (agents, invariants) = roster(catalog, &sandbox(), &spec, "test");
    let mut job = Job::new(&spec, &agents, &invariants).unwrap();
    job.run(&crate::support::rayon(threads), &Deadline::new(Duration::from_mins(1)));
    (job.result("test"), job.trace().to_vec())
}

fn result<'a>(r: &'a JobResult, id: &str) -> &'a str {
    r.facts
        .iter()
        .find(|f| f.key == "results" && f.id == id)
        .map_or_else(|| panic!("no results/{id}: {r:#?}"), |f| &f.content)
}

fn calls(trace: &[CycleTrace]) -> Vec<ToolCall> {
    trace.iter().flat_map(|c| c.agents.iter().flat_map(|a| a.tools.iter().cloned())).collect()
}

#[test]
fn an_agent_calls_a_tool_and_the_trace_and_stats_record_it() {
    let catalog = catalog("calls", &["tool-upper"]);
    let (r, trace) = run(&catalog, &job(&[("1", "upper", "hello"), ("2", "upper", "")]), 2);
    assert_eq!(r.status, Status::Converged, "{:#?}", r.diagnostics);
    assert_eq!(result(&r, "1"), "ok:HELLO");
    assert!(result(&r, "2").starts_with("failed:") && result(&r, "2").contains("empty input"), "{}", result(&r, "2"));
    let calls = calls(&trace);
    assert_eq!(calls.len(), 2);
    let upper = catalog.tools.resolve("upper").unwrap();
    assert_eq!(calls[0].digest.as_deref(), Some(upper.digest.as_str()));
    assert_eq!(calls[0].input_sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert_eq!((calls[0].outcome, calls[0].output.as_str()), (ToolOutcome::Ok, "HELLO"));
    assert_eq!(calls[1].outcome, ToolOutcome::Failed);
    assert!(calls[0].fuel > 0 && calls[0].memory > 0, "{:?}", calls[0]);
    assert_eq!(r.stats.tool_calls, 2);
    assert_eq!(r.stats.tools["upper"].calls, 2);
    assert_eq!(r.stats.tools["upper"].failures, 1);
    assert_eq!(r.stats.tool_fuel, calls[0].fuel + calls[1].fuel);
    // Pinned by digest, the same tool.
    let pinned = format!("upper@{}", upper.digest);
    assert!(catalog.tools.resolve(&pinned).is_some());
    assert!(catalog.tools.resolve("upper@0000").is_none());
}

#[test]
fn a_declared_tool_that_is_not_installed_is_unknown() {
    let catalog = catalog("unknown", &[]);
    let (r, trace) = run(&catalog, &job(&[("1", "upper", "x")]), 1);
    assert!(result(&r, "1").starts_with("unknown:"), "{}", result(&r, "1"));
    assert_eq!(calls(&trace)[0].outcome, ToolOutcome::Unknown);
    assert_eq!(calls(&trace)[0].digest, None);
}

#[test]
fn a_tool_that_loops_runs_out_of_its_fuel_and_the_agent_goes_on() {
    let catalog = catalog("spin", &["tool-spin", "tool-upper"]);
    let (r, trace) = run(&catalog, &job(&[("1", "spin", ""), ("2", "upper", "after")]), 2);
    assert_eq!(r.status, Status::Converged);
    assert!(result(&r, "1").starts_with("failed:") && result(&r, "1").contains("out_of_fuel"), "{}", result(&r, "1"));
    assert_eq!(result(&r, "2"), "ok:AFTER");
    let spin = &calls(&trace)[0];
    assert!(spin.fuel >= ToolLimits::default().fuel, "the tool's own fuel limit, not the agent's: {}", spin.fuel);
}

#[test]
fn a_tool_that_grows_memory_is_stopped_at_its_memory_limit() {
    let catalog = catalog("grow", &["tool-grow"]);
    let (r, trace) = run(&catalog, &job(&[("1", "grow", "")]), 1);
    assert!(result(&r, "1").contains("out_of_memory"), "{}", result(&r, "1"));
    let limit = u64::from(ToolLimits::default().memory_mb) * 1024 * 1024;
    assert!(calls(&trace)[0].memory <= limit);
}

#[test]
fn a_tool_that_recurses_traps_on_its_stack_and_the_host_survives() {
    let catalog = catalog("recurse", &["tool-recurse", "tool-upper"]);
    let (r, _) = run(&catalog, &job(&[("1", "recurse", ""), ("2", "upper", "still here")]), 2);
    assert!(result(&r, "1").starts_with("failed:") && result(&r, "1").contains("trap"), "{}", result(&r, "1"));
    assert_eq!(result(&r, "2"), "ok:STILL HERE");
}

#[test]
fn a_huge_output_is_a_failure_not_a_copy() {
    let catalog = catalog("huge", &["tool-huge"]);
    let (r, _) = run(&catalog, &job(&[("1", "huge", "")]), 1);
    assert!(result(&r, "1").contains("over the cap"), "{}", result(&r, "1"));
}

#[test]
fn consecutive_failures_open_the_circuit_the_same_way_on_any_thread_count() {
    let catalog = catalog("circuit", &["tool-fail", "tool-upper"]);
    let calls_in = [("1", "fail", ""), ("2", "fail", ""), ("3", "fail", ""), ("4", "fail", ""), ("5", "upper", "x")];
    let (one, trace) = run(&catalog, &job(&calls_in), 1);
    let (two, _) = run(&catalog, &job(&calls_in), 2);
    assert_eq!(one.context_hash, two.context_hash);
    for id in ["1", "2", "3"] {
        assert!(result(&one, id).starts_with("failed:") && result(&one, id).contains("trap"), "{}", result(&one, id));
    }
    assert!(result(&one, "4").starts_with("unavailable:"), "{}", result(&one, "4"));
    assert_eq!(result(&one, "5"), "ok:X", "another tool's circuit is its own");
    let outcomes: Vec<ToolOutcome> = calls(&trace).iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes[3], ToolOutcome::Unavailable);
    assert_eq!(calls(&trace)[3].fuel, 0, "an open circuit does not run the tool");
}

#[test]
fn a_tool_sees_a_deterministic_clock_and_rng() {
    let catalog = catalog("clock", &["tool-clock"]);
    let spec = job(&[("1", "clock", ""), ("2", "clock", "")]);
    let (a, _) = run(&catalog, &spec, 1);
    let (b, _) = run(&catalog, &spec, 2);
    assert_eq!(a.context_hash, b.context_hash, "{} / {}", result(&a, "1"), result(&b, "1"));
    let wall: u128 = result(&a, "1").trim_start_matches("ok:").split(' ').next().unwrap().parse().unwrap();
    assert!((1_704_067_200_000_000_000..1_704_067_201_000_000_000).contains(&wall), "{wall}");
}

// ---- validation ----

fn test(name: &str, input: &str, expect: Expect) -> TestCase {
    TestCase { name: name.into(), input: input.into(), expect }
}

fn manifest(name: &str, tests: Vec<TestCase>) -> Manifest {
    Manifest { name: name.into(), description: String::new(), tests, requested: vec![], limits: None }
}

/// Three tests whose expectations any tool meets that returns `ok` for these inputs.
fn any_output(name: &str) -> Manifest {
    manifest(name, ["a", "b", "c"].iter().map(|i| test(i, i, Expect::Contains(String::new()))).collect())
}

fn upper() -> Manifest {
    manifest(
        "upper",
        vec![
            test("word", "abc", Expect::Ok("ABC".into())),
            test("sentence", "hello, world", Expect::Contains("WORLD".into())),
            test("empty", "", Expect::Error(true)),
        ],
    )
}

fn check(bytes: &[u8], manifest: &Manifest) -> Report {
    let report = validate(&sandbox(), None, bytes, manifest).report;
    assert_eq!(report.reasons.is_empty(), report.verdict == Verdict::Accepted, "{report:#?}");
    report
}

fn rejected_because(report: &Report, needle: &str) {
    assert_eq!(report.verdict, Verdict::Rejected, "{report:#?}");
    assert!(report.reasons.iter().any(|r| r.contains(needle)), "no reason mentions {needle:?}: {:#?}", report.reasons);
}

#[test]
fn a_good_tool_with_three_passing_tests_is_accepted_with_resources_listed() {
    let report = check(&guest("tool-upper"), &upper());
    assert_eq!(report.verdict, Verdict::Accepted, "{report:#?}");
    assert_eq!(report.tests.len(), 3);
    assert!(report.tests.iter().all(|t| t.passed && t.fuel > 0 && t.peak_memory_bytes > 0));
    assert_eq!(report.tests[0].output.as_deref(), Some("ABC"));
    assert!(report.tests[2].error.as_deref().is_some_and(|e| e.contains("empty input")));
    assert!(!report.imports.is_empty() && report.imports.iter().all(|i| i.allowed), "{:?}", report.imports);
    assert!(report.attempts.is_empty(), "{:?}", report.attempts);
    assert_eq!(report.digest.len(), 64);
    // The report is the SPEC's JSON.
    let v = serde_json::to_value(&report).unwrap();
    for field in ["verdict", "reasons", "imports", "tests", "digest", "attempts"] {
        assert!(v.get(field).is_some(), "{field} missing from {v}");
    }
    assert_eq!(v["verdict"], "accepted");
    assert_eq!(v["tests"][0]["peak_memory_bytes"].as_u64(), Some(report.tests[0].peak_memory_bytes));
}

#[test]
fn fewer_than_three_tests_needs_review() {
    let mut m = upper();
    m.tests.truncate(2);
    let report = check(&guest("tool-upper"), &m);
    assert_eq!(report.verdict, Verdict::NeedsReview);
    assert!(report.reasons[0].contains("2 tests"), "{:?}", report.reasons);
}

#[test]
fn asking_for_more_than_the_default_limits_or_for_capabilities_needs_review() {
    let mut m = upper();
    m.limits = Some(ToolLimits { fuel: ToolLimits::default().fuel * 10, ..ToolLimits::default() });
    m.requested = vec!["network".into()];
    let report = check(&guest("tool-upper"), &m);
    assert_eq!(report.verdict, Verdict::NeedsReview);
    assert!(report.reasons.iter().any(|r| r.contains("default tool limits")), "{:?}", report.reasons);
    assert!(report.reasons.iter().any(|r| r.contains("network")), "{:?}", report.reasons);
}

#[test]
fn a_failing_test_rejects_and_names_the_test() {
    let mut m = upper();
    m.tests[0].expect = Expect::Ok("abc".into());
    let report = check(&guest("tool-upper"), &m);
    rejected_because(&report, "word");
    assert!(!report.tests[0].passed && report.tests[1].passed);
    assert!(report.tests[0].reason.as_deref().is_some_and(|r| r.contains("\"ABC\"")), "{:?}", report.tests[0]);
}

#[test]
fn an_infinite_loop_fails_its_tests_on_fuel() {
    let report = check(&guest("tool-spin"), &any_output("spin"));
    rejected_because(&report, "out_of_fuel");
    assert!(report.tests.iter().all(|t| t.fuel >= ToolLimits::default().fuel));
}

#[test]
fn memory_growth_fails_its_tests_on_memory() {
    let report = check(&guest("tool-grow"), &any_output("grow"));
    rejected_because(&report, "out_of_memory");
}

#[test]
fn a_huge_output_fails_its_tests() {
    let report = check(&guest("tool-huge"), &any_output("huge"));
    rejected_because(&report, "over the cap");
}

#[test]
fn a_trap_is_not_an_error_result() {
    let m = manifest("fail", ["a", "b", "c"].iter().map(|i| test(i, i, Expect::Error(true))).collect());
    let report = check(&guest("tool-fail"), &m);
    rejected_because(&report, "trap");
}

#[test]
fn a_core_module_is_rejected_before_anything_runs() {
    let report = check(b"\0asm\x01\0\0\0", &upper());
    rejected_because(&report, "core WebAssembly module");
    assert!(report.imports.is_empty() && report.tests.is_empty());
}

#[test]
fn garbage_is_rejected() {
    rejected_because(&check(b"#!/bin/sh\nrm -rf /\n", &upper()), "not WebAssembly");
    rejected_because(&check(b"\0asm\x0d\0\x01\0\xff\xff\xff", &upper()), "not valid");
}

#[test]
fn a_disabled_proposal_is_rejected_and_named() {
    // A component holding one core module whose memory is 64-bit (memory64, off in the host's engine).
    let module: &[u8] = b"\0asm\x01\0\0\0\x05\x03\x01\x04\x01";
    let mut component = b"\0asm\x0d\0\x01\0\x01".to_vec();
    component.push(u8::try_from(module.len()).unwrap());
    component.extend_from_slice(module);
    let report = check(&component, &upper());
    rejected_because(&report, "memory64");
}

#[test]
fn the_wrong_world_is_rejected() {
    let report = check(&guest("tool-caller"), &upper());
    rejected_because(&report, "wrong world");
    assert!(report.reasons[0].contains("converge-agent"), "{:?}", report.reasons);
}

#[test]
fn an_import_outside_the_policy_is_listed_and_rejected() {
    let report = check(&guest("tool-bad-import"), &any_output("bad-import-tool"));
    rejected_because(&report, "evil:backdoor");
    assert!(report.imports.iter().any(|i| i.name.starts_with("evil:backdoor") && !i.allowed), "{:?}", report.imports);
    assert!(report.imports.iter().filter(|i| i.name.starts_with("wasi:")).all(|i| i.allowed));
}

#[test]
fn what_a_tool_tried_is_listed_and_makes_it_need_review() {
    let report = check(&guest("tool-snoop"), &any_output("snoop"));
    assert_eq!(report.verdict, Verdict::NeedsReview, "{report:#?}");
    let tried = report.attempts.join("\n");
    for what in ["filesystem", "environment", "TCP socket", "look up the name example.com"] {
        assert!(tried.contains(what), "{what} not in attempts:\n{tried}");
    }
    assert!(report.reasons.iter().any(|r| r.contains("attempts")), "{:?}", report.reasons);
}

#[test]
fn an_http_request_is_built_but_never_sent_and_the_attempt_is_listed() {
    let report = check(&guest("tool-fetch"), &any_output("fetch"));
    assert_eq!(report.verdict, Verdict::NeedsReview, "{report:#?}");
    assert!(
        report.attempts.iter().any(|a| a == "http: tried POST https://example.com/exfil; denied"),
        "{:?}",
        report.attempts
    );
    // The guest built it all (headers checked, the request's headers immutable, the body written nowhere) and
    // was told no: an error it can handle, not a trap.
    let output = report.tests[0].output.as_deref().unwrap_or_else(|| panic!("{report:#?}"));
    for seen in [
        "bad name: Err(HeaderError::InvalidSyntax)",
        "immutable: Err(HeaderError::Immutable)",
        "secret: [[52, 50]]",
        "written: Ok(())",
    ] {
        assert!(output.contains(seen), "{seen} not in {output}");
    }
    assert!(output.ends_with("sent: Err(ErrorCode::HttpRequestDenied)"), "{output}");
}

#[test]
fn clocks_and_randomness_give_identical_outputs_on_both_runs() {
    let report = check(&guest("tool-clock"), &any_output("clock"));
    assert_eq!(report.verdict, Verdict::Accepted, "{report:#?}");
    assert!(report.tests.iter().all(|t| t.passed));
}

#[test]
fn a_name_other_than_the_manifests_is_rejected() {
    let report = check(&guest("tool-upper"), &any_output("lower"));
    rejected_because(&report, "declares the name upper");
}

#[test]
fn a_component_over_the_size_cap_is_rejected_unread() {
    let report = check(&vec![0; MAX_TOOL_BYTES + 1], &upper());
    rejected_because(&report, "over the cap");
}

#[test]
fn malformed_manifests_are_named_errors() {
    let err = |text: &str| Manifest::parse(text.as_bytes()).unwrap_err().to_string();
    assert!(err(r#"{"name": "x", "tests": [], "extra": 1}"#).contains("extra"));
    assert!(
        err(r#"{"name": "x", "tests": [{"name": "t", "input": "", "expect": {"maybe": 1}}]}"#).contains("tests[0]")
    );
    assert!(err(r#"{"name": "Bad Name", "tests": []}"#).contains("name"));
    assert!(
        err(r#"{"name": "x", "tests": [], "limits": {"fuel": 0, "memory_mb": 1, "timeout_ms": 1}}"#)
            .contains("limits.fuel")
    );
    assert!(err("not json").contains("manifest"));
    let ok = Manifest::parse(br#"{"name": "x", "tests": [{"name": "t", "input": "i", "expect": {"error": true}}]}"#)
        .unwrap();
    assert_eq!(ok.tests[0].expect, Expect::Error(true));
}
