//! The `converge` binary end to end: exit codes, stdout and stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh agents directory holding the example agents (and, when asked, a hostile file).
fn agents_dir(test: &str, extra: &[(&str, &[u8])]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    for (name, path) in converge_tests::AGENTS {
        std::fs::copy(path, dir.join("agents").join(format!("{name}.wasm"))).unwrap();
    }
    for (file, bytes) in extra {
        std::fs::write(dir.join("agents").join(file), bytes).unwrap();
    }
    dir
}

fn converge(dir: &PathBuf, args: &[&str]) -> Output {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-cache");
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .current_dir(dir)
        .args(args)
        .args(["--cache", cache.to_str().unwrap()])
        .output()
        .unwrap()
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name).display().to_string()
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
