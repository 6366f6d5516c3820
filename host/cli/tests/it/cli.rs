//! The `converge` binary end to end: exit codes, stdout and stderr.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh agents directory holding the example agents (and, when asked, a hostile file).
fn agents_dir(test: &str, extra: &[(&str, &[u8])]) -> PathBuf {
    let dir = crate::common::test_dir("cli", test);
    for (file, bytes) in extra {
        std::fs::write(dir.join("agents").join(file), bytes).unwrap();
    }
    dir
}

fn converge(dir: &PathBuf, args: &[&str]) -> Output {
    let cache = crate::common::cache_dir();
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .current_dir(dir)
        .args(args)
        .args(["--cache", cache.to_str().unwrap()])
        .output()
        .unwrap()
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name).display().to_string()
}

#[test]
fn run_converges_exits_0_and_prints_the_result() {
    let dir = agents_dir("converges", &[("garbage.wasm", b"nope")]);
    let out = converge(&dir, &["run", &example("market-entry.json"), "--threads", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "converged");
    assert!(stderr.contains("cycle 1: 7 agents"), "{stderr}");
    assert!(stderr.contains("skipped garbage.wasm: is not WebAssembly"), "{stderr}");
    // Same hash on one thread.
    let again = converge(&dir, &["run", &example("market-entry.json"), "--threads", "1"]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["context_hash"], result["context_hash"]);
}

#[test]
fn bench_runs_the_job_many_times_and_reports_what_it_cost() {
    let dir = agents_dir("bench", &[]);
    let out = converge(&dir, &["bench", &example("market-entry.json"), "--runs", "5", "--warmup", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["runs"].as_u64(), r["status"].as_str()), (Some(5), Some("converged")));
    assert_eq!(r["context_hash"], crate::common::MARKET_HASH, "the hash of every run");
    assert_eq!(r["cycles"], crate::common::MARKET_CYCLES);
    assert!(r["calls_per_job"].as_u64().unwrap() > 0 && r["fuel_per_job"].as_u64().unwrap() > 0);
    let (job, call) = (&r["job_ms"], &r["call_us"]);
    for s in [job, call] {
        let (p50, p99, max) = (s["p50"].as_f64().unwrap(), s["p99"].as_f64().unwrap(), s["max"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{s}");
    }
    // The text report, and a job that waits exits 1.
    let text = converge(&dir, &["bench", &example("review.json"), "--runs", "2", "--warmup", "0"]);
    assert_eq!(text.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("waiting after"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let none = converge(&dir, &["bench", &example("market-entry.json"), "--runs", "0"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("--runs must be at least 1"));
}

#[test]
fn run_waiting_exits_1() {
    let dir = agents_dir("waiting", &[]);
    let out = converge(&dir, &["run", &example("review.json")]);
    assert_eq!(out.status.code(), Some(1));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "waiting");
    assert_eq!(result["open_questions"][0]["id"], "strategy-choice");
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let dir = agents_dir("bad", &[]);
    for (job, expect) in [
        (r#"{"goal": "x", "agents": ["nope"]}"#, "unknown agent \"nope\""),
        (r#"{"goal": "x", "bogus": 1}"#, "unknown field `bogus`"),
        (r#"{"goal": "x", "budget": {"memory_mb": 0}}"#, "budget.memory_mb"),
        ("not json", "expected"),
    ] {
        std::fs::write(dir.join("job.json"), job).unwrap();
        let out = converge(&dir, &["run", "job.json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{job}: {stderr}");
        assert!(stderr.contains(expect), "{job}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = converge(&dir, &["run", "missing.json"]);
    assert_eq!(out.status.code(), Some(2));
    let out = converge(&dir, &["run", &example("market-entry.json"), "--agents", "no-such-dir"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn agents_lists_what_loaded_and_what_was_rejected() {
    let dir = agents_dir("list", &[("core.wasm", b"\0asm\x01\0\0\0")]);
    let out = converge(&dir, &["agents", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["agents"].as_array().unwrap().len(), 7);
    assert_eq!(list["invariants"][0]["name"], "decision-consistency");
    assert_eq!(list["agents"][0]["digest"].as_str().unwrap().len(), 64);
    assert_eq!(list["rejected"][0]["file"], "core.wasm");
}

fn guest(name: &str) -> &'static str {
    converge_tests::GUESTS.iter().find(|(n, _)| *n == name).map_or_else(|| panic!("no guest {name}"), |(_, p)| *p)
}

fn validate_tool(dir: &std::path::Path, tool: &str, manifest: &str) -> (Option<i32>, String, String) {
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["validate-tool", tool, "--manifest", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_tool_prints_the_report_and_exits_by_verdict() {
    let dir = agents_dir("validate-tool", &[]);
    let three = r#"{"name": "upper", "description": "d", "requested": [], "tests": [
        {"name": "word", "input": "abc", "expect": {"ok": "ABC"}},
        {"name": "phrase", "input": "a b", "expect": {"contains": "A B"}},
        {"name": "empty", "input": "", "expect": {"error": true}}]}"#;
    let (code, stdout, stderr) = validate_tool(&dir, guest("tool-upper"), three);
    assert_eq!(code, Some(0), "{stderr}{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["verdict"], "accepted");
    assert_eq!(report["tests"].as_array().unwrap().len(), 3);
    // A hostile tool: rejected, exit 1, the reason named.
    let spin = three.replace("\"upper\"", "\"spin\"");
    let (code, stdout, _) = validate_tool(&dir, guest("tool-spin"), &spin);
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["verdict"], "rejected");
    assert!(report["reasons"][0].as_str().unwrap().contains("out_of_fuel"), "{report}");
    // Unusable input: exit 2, nothing on stdout.
    let (code, stdout, stderr) = validate_tool(&dir, guest("tool-upper"), r#"{"name": "upper", "tests": 3}"#);
    assert_eq!((code, stdout.as_str()), (Some(2), ""));
    assert!(stderr.contains("tests"), "{stderr}");
    let (code, _, stderr) = validate_tool(&dir, "/no/such/tool.wasm", three);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/no/such/tool.wasm"), "{stderr}");
}
