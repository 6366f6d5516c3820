//! Hostile and probe guests (`tests/guests/`) run through the real host: registry, sandbox, engine.
//!
//! Each limit has a guest that breaks it and a test that fails if the limit is removed: the test checks the
//! SPEC failure kind (which only that limit produces), that the job goes on, and that the host survives.

use converge_engine::{CycleTrace, DiagnosticKind, FailureKind, Job, JobResult, JobSpec, Outcome, Reason, Status};
use converge_runtime::{Catalog, Registry, roster};
use converge_sandbox::{Sandbox, SandboxConfig};
use converge_service::Deadline;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use converge_tests::GUESTS;

/// Every guest and the tests that load it: a guest without a test is a limit nobody checks.
const COVERED: &[&str] = &[
    "bad-import",
    "chatter",
    "conflict-a",
    "conflict-b",
    // Slow on purpose: the chaos test (host/cli/tests/it/chaos.rs) catches its jobs mid-run; see also below.
    "counter",
    "flood",
    "forge",
    "grow",
    "huge-list",
    "huge-string",
    "inv-count",
    "panic",
    "reader",
    "reader-lean",
    "recurse",
    "sleeper",
    "snoop",
    "spin",
    // The tool guests and their caller are covered in `tools.rs`.
    "tool-bad-import",
    "tool-caller",
    "tool-clock",
    "tool-fail",
    "tool-fetch",
    "tool-grow",
    "tool-huge",
    "tool-recurse",
    "tool-snoop",
    "tool-spin",
    "tool-thief",
    "tool-upper",
    "undeclared",
    "wrong-world",
];

fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| {
        Arc::new(Sandbox::new(SandboxConfig { instances: 16, pooling: true, ..SandboxConfig::default() }).unwrap())
    }))
}

fn guest(name: &str) -> &'static str {
    GUESTS.iter().find(|(n, _)| *n == name).map_or_else(|| panic!("no guest {name}"), |(_, p)| *p)
}

/// A fresh agents directory for `test` holding `files` (`(file name, bytes)`), and the registry over it. The
/// compiled-code cache is shared by all tests, so each guest compiles once.
fn registry(test: &str, files: &[(&str, Vec<u8>)]) -> (Registry, PathBuf) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join("agents").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    (Registry::new(sandbox(), &dir, Some(root.join("component-cache"))), dir)
}

fn guests(names: &[&str]) -> Vec<(String, Vec<u8>)> {
    names.iter().map(|n| (format!("{n}.wasm"), std::fs::read(guest(n)).unwrap())).collect()
}

fn load(test: &str, names: &[&str]) -> Catalog {
    let files = guests(names);
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(f, b)| (f.as_str(), b.clone())).collect();
    let (mut registry, _) = registry(test, &files);
    let catalog = registry.refresh().unwrap();
    assert!(catalog.rejected.is_empty(), "{:?}", catalog.rejected);
    catalog
}

fn run(catalog: &Catalog, json: &str) -> (JobResult, Vec<CycleTrace>) {
    run_on(catalog, json, 2)
}

fn run_on(catalog: &Catalog, json: &str, threads: usize) -> (JobResult, Vec<CycleTrace>) {
    let spec = JobSpec::from_json(json).unwrap();
    let (agents, invariants) = roster(catalog, &sandbox(), &spec, "test");
    let mut job = Job::new(&spec, &agents, &invariants).unwrap();
    job.run(&crate::support::rayon(threads), &Deadline::new(Duration::from_millis(spec.budget.job_timeout_ms)));
    (job.result("test"), job.trace().to_vec())
}

/// The one diagnostic of a job whose only agent failed, and the job went on to converge.
fn failed_alone(result: &JobResult, agent: &str, kind: FailureKind) -> String {
    assert_eq!(result.status, Status::Converged, "{result:#?}");
    assert_eq!(result.diagnostics.len(), 1, "{:#?}", result.diagnostics);
    let d = &result.diagnostics[0];
    assert_eq!((d.agent.as_str(), d.kind), (agent, DiagnosticKind::from(kind)), "{d:#?}");
    assert!(result.facts.iter().any(|f| f.key == "diagnostics" && f.id == format!("{agent}@1")));
    d.message.clone()
}

#[test]
fn every_guest_has_a_test() {
    let built: Vec<&str> = GUESTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(built, COVERED, "add a test for each new guest under tests/guests and list it in COVERED");
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let catalog = load("spin", &["spin"]);
    let (result, trace) =
        run(&catalog, r#"{"goal": "loop", "budget": {"fuel_per_call": 20000000, "call_timeout_ms": 60000}}"#);
    let message = failed_alone(&result, "spin", FailureKind::OutOfFuel);
    assert!(message.contains("20000000"), "{message}");
    assert!(result.deterministic, "fuel, not the clock, stopped it");
    assert!(trace[0].agents[0].fuel >= 20_000_000);
}

#[test]
fn infinite_loop_hits_the_deadline_when_fuel_is_plenty() {
    let catalog = load("spin-deadline", &["spin"]);
    let (result, _) =
        run(&catalog, r#"{"goal": "loop", "budget": {"fuel_per_call": 1000000000000, "call_timeout_ms": 50}}"#);
    let message = failed_alone(&result, "spin", FailureKind::Deadline);
    assert!(message.contains("50 ms"), "{message}");
    assert!(!result.deterministic, "a wall-clock limit fired");
}

#[test]
fn sleeping_advances_the_virtual_clock_instead_of_blocking_a_host_thread() {
    let catalog = load("sleeper", &["sleeper"]);
    // Were the sleep real, the call would block a host thread for an hour: the epoch deadline cannot interrupt
    // host code, so this test would hang instead of failing with `deadline`.
    let (result, _) = run(&catalog, r#"{"goal": "sleep", "budget": {"call_timeout_ms": 60000}}"#);
    assert_eq!(result.status, Status::Converged);
    assert!(result.deterministic);
    let slept: u64 = result.facts.iter().find(|f| f.key == "slept").unwrap().content.parse().unwrap();
    assert!(slept >= 3600, "virtual time passed: {slept} s");
}

#[test]
fn memory_growth_is_out_of_memory_counted_by_the_limiter() {
    let catalog = load("grow", &["grow"]);
    let (result, trace) = run(&catalog, r#"{"goal": "grow", "budget": {"memory_mb": 16}}"#);
    let message = failed_alone(&result, "grow", FailureKind::OutOfMemory);
    assert!(message.contains(&(16u64 << 20).to_string()), "{message}");
    let peak = trace[0].agents[0].memory;
    assert!(peak > 8 << 20 && peak <= 16 << 20, "peak {peak}");
}

#[test]
fn deep_recursion_traps_and_the_host_survives() {
    let catalog = load("recurse", &["recurse", "reader"]);
    let (result, _) = run(&catalog, r#"{"goal": "recurse", "facts": [{"key": "in", "id": "1", "content": "x"}]}"#);
    assert_eq!(result.status, Status::Converged);
    let d = result.diagnostics.iter().find(|d| d.agent == "recurse").unwrap();
    assert_eq!(d.kind, DiagnosticKind::Trap);
    // The other agent of the same cycle was unaffected.
    assert!(result.facts.iter().any(|f| f.key == "echo" && f.id == "1"));
}

#[test]
fn panic_is_a_trap() {
    let catalog = load("panic", &["panic"]);
    let (result, trace) = run(&catalog, r#"{"goal": "panic"}"#);
    failed_alone(&result, "panic", FailureKind::Trap);
    // The panic message went to stderr, which is captured into the trace.
    assert!(trace[0].agents[0].logs.iter().any(|l| l.starts_with("stderr: ")), "{:?}", trace[0].agents[0].logs);
}

#[test]
fn huge_string_is_an_invalid_effect() {
    let catalog = load("huge-string", &["huge-string"]);
    let (result, _) = run(&catalog, r#"{"goal": "big"}"#);
    let message = failed_alone(&result, "huge-string", FailureKind::InvalidEffect);
    assert!(message.contains("max_fact_bytes"), "{message}");
}

#[test]
fn huge_list_exhausts_max_facts_and_nothing_of_it_is_applied() {
    let catalog = load("huge-list", &["huge-list"]);
    let (result, trace) = run(&catalog, r#"{"goal": "big"}"#);
    assert_eq!((result.status, result.reason), (Status::BudgetExhausted, Some(Reason::Facts)));
    assert!(result.facts.is_empty());
    assert_eq!(trace[0].agents[0].outcome, Outcome::OverBudget);
    assert_eq!(trace[0].rejected, 300_000);
}

#[test]
fn huge_list_cannot_be_built_in_a_small_memory() {
    let catalog = load("huge-list-small", &["huge-list"]);
    let (result, _) = run(&catalog, r#"{"goal": "big", "budget": {"memory_mb": 4}}"#);
    failed_alone(&result, "huge-list", FailureKind::OutOfMemory);
}

#[test]
fn flood_of_100k_facts_exhausts_max_facts() {
    let catalog = load("flood", &["flood"]);
    let (result, _) = run(&catalog, r#"{"goal": "flood"}"#);
    assert_eq!((result.status, result.reason), (Status::BudgetExhausted, Some(Reason::Facts)));
    assert!(result.facts.iter().all(|f| f.key != "out"));
    let (result, _) = run(&catalog, r#"{"goal": "flood", "budget": {"max_facts": 200000}}"#);
    assert_eq!(result.status, Status::Converged, "the same effect fits a larger budget");
    assert_eq!(result.facts.len(), 100_000);
}

#[test]
fn writes_to_undeclared_and_reserved_keys_are_rejected_whole() {
    let catalog = load("undeclared", &["undeclared", "forge"]);
    let (result, _) = run(&catalog, r#"{"goal": "smuggle"}"#);
    assert_eq!(result.status, Status::Converged);
    let kinds: Vec<_> = result.diagnostics.iter().map(|d| (d.agent.as_str(), d.kind)).collect();
    let invalid = DiagnosticKind::InvalidEffect;
    assert_eq!(kinds, [("forge", invalid), ("undeclared", invalid)]);
    assert!(result.diagnostics[0].message.contains("reserved"));
    assert!(result.diagnostics[1].message.contains("secrets"));
    // Nothing of either effect was applied, not even the declared `out/1` of `undeclared`.
    assert!(result.facts.iter().all(|f| f.key == "diagnostics"), "{:?}", result.facts);
}

#[test]
fn two_agents_writing_one_fact_differently_conflict() {
    let catalog = load("conflict", &["conflict-b", "conflict-a"]);
    let (result, _) = run(&catalog, r#"{"goal": "disagree"}"#);
    assert_eq!(result.status, Status::Conflict);
    let d = result.diagnostics.iter().find(|d| d.kind == DiagnosticKind::Conflict).unwrap();
    let detail = d.conflict.as_ref().unwrap();
    assert_eq!((detail.existing.agent.as_str(), detail.incoming.agent.as_str()), ("conflict-a", "conflict-b"));
    assert_ne!(detail.existing.content, detail.incoming.content);
}

#[test]
fn undeclared_tool_call_is_denied() {
    let catalog = load("tool-thief", &["tool-thief"]);
    let (result, trace) = run(&catalog, r#"{"goal": "steal"}"#);
    assert_eq!(result.status, Status::Converged);
    let answer = result.facts.iter().find(|f| f.key == "out").unwrap();
    assert!(answer.content.starts_with("ToolError::Denied("), "{}", answer.content);
    assert!(trace[0].agents[0].logs.iter().any(|l| l.contains("undeclared-tool: denied")));
}

#[test]
fn snooping_sees_nothing_real_and_two_runs_agree() {
    let catalog = load("snoop", &["snoop"]);
    let (first, trace) = run(&catalog, r#"{"goal": "snoop"}"#);
    let (second, _) = run_on(&catalog, r#"{"goal": "snoop"}"#, 1);
    assert_eq!(first.status, Status::Converged);
    assert_eq!(first.context_hash, second.context_hash, "clock and RNG are deterministic");
    let seen = |id: &str| first.facts.iter().find(|f| f.key == "seen" && f.id == id).unwrap().content.clone();
    assert!(seen("passwd").starts_with("error"), "{}", seen("passwd"));
    assert!(seen("cwd").starts_with("error"), "{}", seen("cwd"));
    assert_eq!(seen("env"), "");
    assert_eq!(seen("args"), "");
    assert!(seen("socket").starts_with("error"), "{}", seen("socket"));
    // The virtual wall clock starts at 2024-01-01T00:00:00Z, whatever the real date.
    let wall: u128 = seen("wall-clock").parse().unwrap();
    assert!((1_704_067_200_000_000_000..1_704_067_201_000_000_000).contains(&wall), "{wall}");
    let logs = &trace[0].agents[0].logs;
    assert!(
        logs.contains(&"stdout: snoop was here".to_owned()) && logs.contains(&"stderr: snoop on stderr".to_owned())
    );
    // Another job (another goal) gets other random numbers, the same job the same ones.
    let (other, _) = run(&catalog, r#"{"goal": "snoop again"}"#);
    let random = |r: &JobResult| r.facts.iter().find(|f| f.id == "random").unwrap().content.clone();
    assert_ne!(random(&first), random(&other));
}

#[test]
fn chatter_is_capped_not_failed() {
    let catalog = load("chatter", &["chatter"]);
    let (result, trace) = run(&catalog, r#"{"goal": "talk"}"#);
    assert_eq!(result.status, Status::Converged);
    assert!(result.diagnostics.is_empty());
    let logs = &trace[0].agents[0].logs;
    let bytes: usize = logs.iter().map(String::len).sum();
    assert!(bytes <= 2 * converge_sandbox::OUTPUT_CAP, "{bytes} bytes kept");
    assert!(logs.last().unwrap().contains("not kept"), "{:?}", logs.last());
}

#[test]
fn the_view_serves_the_snapshot() {
    let catalog = load("reader", &["reader"]);
    let json = r#"{"goal": "echo", "facts": [{"key": "in", "id": "1", "content": "a"}, {"key": "in", "id": "2", "content": "b"}]}"#;
    let (result, _) = run(&catalog, json);
    assert_eq!(result.status, Status::Converged);
    let echo: Vec<(&str, &str)> =
        result.facts.iter().filter(|f| f.key == "echo").map(|f| (f.id.as_str(), f.content.as_str())).collect();
    assert_eq!(echo, [("1", "a|count=2"), ("2", "b|count=2"), ("meta@1", "goal=echo;keys=in;get=a")]);
}

#[test]
fn a_guest_without_std_imports_no_wasi_and_reads_the_same() {
    // The reader's logic without `std`: the bench's `call/sandboxed-lean` measures what WASI imports cost.
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let imports = |name: &str| sandbox.imports(&sandbox.compile(&std::fs::read(guest(name)).unwrap()).unwrap());
    let lean = imports("reader-lean");
    assert!(lean.iter().all(|i| i.starts_with("converge:agent/")), "{lean:?}");
    assert!(imports("reader").iter().any(|i| i.starts_with("wasi:")), "a std guest imports WASI");
    let json = r#"{"goal": "echo", "facts": [{"key": "in", "id": "1", "content": "a"}, {"key": "in", "id": "2", "content": "b"}]}"#;
    let facts = |name: &str| -> Vec<(String, String)> {
        let (result, _) = run(&load(name, &[name]), json);
        assert_eq!(result.status, Status::Converged);
        result.facts.into_iter().filter(|f| f.key == "echo").map(|f| (f.id, f.content)).collect()
    };
    assert_eq!(facts("reader-lean"), facts("reader"));
}

#[test]
fn host_functions_charge_hostcall_fuel() {
    let catalog = load("reader-fuel", &["reader"]);
    let big = "x".repeat(60_000);
    let facts: Vec<String> =
        (0..50).map(|i| format!(r#"{{"key": "in", "id": "{i:02}", "content": "{big}"}}"#)).collect();
    let json = format!(r#"{{"goal": "echo", "facts": [{}], "budget": {{"fuel_per_call": 1000000}}}}"#, facts.join(","));
    let (result, _) = run(&catalog, &json);
    let message = failed_alone(&result, "reader", FailureKind::OutOfFuel);
    assert!(message.contains("hostcall"), "{message}");
}

#[test]
fn semantic_invariant_component_ends_the_job() {
    let catalog = load("inv-count", &["reader", "inv-count"]);
    let seeds: Vec<String> = (1..=3).map(|i| format!(r#"{{"key": "in", "id": "{i}", "content": "c"}}"#)).collect();
    let json = format!(r#"{{"goal": "g", "invariants": ["inv-count"], "facts": [{}]}}"#, seeds.join(","));
    let (result, _) = run(&catalog, &json);
    assert_eq!(result.status, Status::InvariantViolated);
    let d = result.diagnostics.iter().find(|d| d.agent == "inv-count").unwrap();
    assert!(d.message.contains("echo has 4 facts"), "{}", d.message);
    // With one seed, echo holds two facts (its echo and the meta fact): the invariant holds.
    let json = r#"{"goal": "g", "invariants": ["inv-count"], "facts": [{"key": "in", "id": "1", "content": "c"}]}"#;
    assert_eq!(run(&catalog, json).0.status, Status::Converged);
}

#[test]
fn the_registry_rejects_by_name_with_a_reason_and_loads_the_rest() {
    let mut files = guests(&["bad-import", "wrong-world", "reader"]);
    files.push(("copy-of-reader.wasm".into(), std::fs::read(guest("reader")).unwrap()));
    files.push(("core.wasm".into(), b"\0asm\x01\0\0\0".to_vec()));
    files.push(("garbage.wasm".into(), b"this is not wasm".to_vec()));
    files.push(("truncated.wasm".into(), std::fs::read(guest("reader")).unwrap()[..1000].to_vec()));
    files.push(("notes.txt".into(), b"ignored".to_vec()));
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(f, b)| (f.as_str(), b.clone())).collect();
    let (mut registry, _) = registry("rejects", &files);
    let catalog = registry.refresh().unwrap();
    assert_eq!(catalog.loaded.keys().collect::<Vec<_>>(), ["reader"]);
    assert_eq!(catalog.loaded["reader"].file, "copy-of-reader.wasm", "the first file in name order keeps the name");
    let reasons: Vec<(&str, &str)> = catalog.rejected.iter().map(|r| (r.file.as_str(), r.reason.as_str())).collect();
    let reason = |file: &str| reasons.iter().find(|(f, _)| *f == file).map(|(_, r)| *r).unwrap();
    assert!(reason("bad-import.wasm").contains("evil:backdoor/door"), "{}", reason("bad-import.wasm"));
    assert!(reason("wrong-world.wasm").contains("converge-tool"), "{}", reason("wrong-world.wasm"));
    assert!(reason("core.wasm").contains("core WebAssembly module"));
    assert!(reason("garbage.wasm").contains("not WebAssembly"));
    assert!(reason("truncated.wasm").contains("not a valid component"), "{}", reason("truncated.wasm"));
    assert!(reason("reader.wasm").contains("already taken by copy-of-reader.wasm"));
    assert_eq!(reasons.len(), 6);
}

#[test]
fn a_corrupt_cache_entry_is_recompiled_not_trusted() {
    let bytes = std::fs::read(guest("reader")).unwrap();
    let (_, dir) = registry("cache", &[("reader.wasm", bytes)]);
    let cache = dir.join("cache");
    let mut registry = Registry::new(sandbox(), &dir, Some(cache.clone()));
    assert_eq!(registry.refresh().unwrap().loaded.len(), 1);
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "one compiled entry, named by content hash and engine settings");
    std::fs::write(&entries[0], b"not a compiled component").unwrap();
    let mut registry = Registry::new(sandbox(), &dir, Some(cache));
    let catalog = registry.refresh().unwrap();
    assert_eq!(catalog.loaded.keys().collect::<Vec<_>>(), ["reader"], "{:?}", catalog.rejected);
    assert_ne!(std::fs::read(&entries[0]).unwrap(), b"not a compiled component", "the entry was rewritten");
}

#[test]
fn a_file_dropped_in_is_picked_up_by_the_next_refresh() {
    let (mut registry, dir) = registry("hot", &[]);
    assert!(registry.refresh().unwrap().loaded.is_empty());
    std::fs::copy(guest("reader"), dir.join("reader.wasm")).unwrap();
    assert_eq!(registry.refresh().unwrap().loaded.keys().collect::<Vec<_>>(), ["reader"]);
    std::fs::remove_file(dir.join("reader.wasm")).unwrap();
    assert!(registry.refresh().unwrap().loaded.is_empty());
}

#[test]
fn a_slow_job_counts_to_its_limit_with_one_hash_on_any_thread_count() {
    let catalog = load("counter", &["counter"]);
    let job = r#"{"goal": "count", "facts": [{"key": "limit", "id": "n", "content": "4"}]}"#;
    let (one, _) = run_on(&catalog, job, 1);
    let (two, trace) = run_on(&catalog, job, 2);
    assert_eq!(one.status, Status::Converged, "{one:#?}");
    assert_eq!(one.facts.iter().filter(|f| f.key == "count").count(), 4);
    assert_eq!((one.context_hash, one.cycles), (two.context_hash, 5));
    assert!(trace.iter().all(|c| c.agents.iter().all(|a| a.fuel > 20_000_000)), "each call does its work");
}
