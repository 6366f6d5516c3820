//! What the CLI tests share: a fresh directory with the example agents, one compiled-code cache, and the
//! examples with the hashes they must reach (from `converge-tests`).
#![allow(dead_code)]

pub use converge_tests::{
    MARKET_CYCLES, MARKET_HASH, REVIEW_ANSWER, REVIEW_CYCLES, REVIEW_HASH, REVIEW_QUESTION, example,
};
use std::path::PathBuf;

/// A fresh directory `<tmp>/<area>/<test>` holding `agents/` with every example agent and tool.
pub fn test_dir(area: &str, test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(area).join(test);
    converge_tests::example_agents(&dir).unwrap();
    dir
}

/// The compiled-code cache every test shares, so each component is compiled once.
///
/// The first call in a test run fills it with the example agents and tools, under a file lock: nextest runs
/// each test in its own process, and servers started at once on a cold cache would each compile every
/// component (a debug build of Cranelift on two cores takes tens of seconds for them).
pub fn cache_dir() -> PathBuf {
    static WARM: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service-cache");
    WARM.get_or_init(|| warm(&dir));
    dir
}

fn warm(cache: &std::path::Path) {
    std::fs::create_dir_all(cache).unwrap();
    let lock = std::fs::File::create(cache.join(".warm.lock")).unwrap();
    lock.lock().unwrap();
    let marker = cache.join(".warm");
    if !marker.exists() {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("warm-cache");
        converge_tests::example_agents(&dir).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
            .arg("agents")
            .args(["--agents".as_ref(), dir.join("agents").as_os_str()])
            .args(["--cache".as_ref(), cache.as_os_str()])
            .args(["--data".as_ref(), dir.join("data").as_os_str()])
            .output()
            .unwrap();
        assert!(out.status.success(), "warming the cache: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(&marker, b"").unwrap();
    }
    drop(lock);
}
