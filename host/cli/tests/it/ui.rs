//! The web page in a real browser: Debian's `chromium` driven by `playwright-core` (pinned by
//! `tests/browser/package-lock.json`, installed here with `npm ci`; never `playwright install`) through
//! `tests/browser/ui.mjs`, against a real `converge serve --token-file`. The page asks for the token once; a
//! job that asks a question shows it waiting and is answered through the form; a second job goes on while
//! the network under the page is cut, and the page resumes from `Last-Event-ID` without losing or repeating an
//! event; nothing is requested outside the server and no token goes into a URL. A failing run leaves a
//! screenshot (its path is printed); a passing one leaves `job.png` and `job-phone.png` beside it.
//!
//! Where there is no chromium the test prints `NOT RUN` and passes, unless `CONVERGE_REQUIRE_BROWSER` is set
//! (CI installs Debian's package and sets it).

use crate::common::{self, REVIEW_ANSWER, REVIEW_HASH};
use crate::serve::Server;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CONVERGE_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CONVERGE_REQUIRE_BROWSER").is_none(),
        "CONVERGE_REQUIRE_BROWSER is set but there is no browser at {} (apt-get install chromium)",
        path.display()
    );
    eprintln!("browser test NOT RUN: no chromium at {} (apt-get install chromium)", path.display());
    None
}

/// `tests/browser` with its locked `node_modules`.
fn browser_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    if !dir.join("node_modules/playwright-core/package.json").is_file() {
        let out = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "npm ci in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    }
    dir
}

fn seqs(v: &Value) -> Vec<u64> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_u64().unwrap()).collect()
}

#[test]
fn the_page_asks_for_a_token_follows_a_job_live_takes_an_answer_and_survives_a_dropped_connection() {
    let Some(chromium) = chromium() else { return };
    let node = browser_dir();
    let dir = common::test_dir("ui", "follows");
    let token = "ui-test-token-0123456789abcdef";
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("default {token}\n")).unwrap();
    let server = Server::start(&dir, &["--token-file", tokens.to_str().unwrap()]);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/review.json");
    let out = Command::new("node")
        .arg("ui.mjs")
        .current_dir(&node)
        .env("BASE", format!("http://{}", server.addr))
        .env("TOKEN", token)
        .env("CHROMIUM", &chromium)
        .env("SPEC", &spec)
        .env("ANSWER", REVIEW_ANSWER)
        .env("SHOTS", &shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser test failed:\n{stderr}\n{stdout}\nserver:\n{}", server.log());
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));

    assert_eq!(r["tokenInSession"], true, "{r}");
    assert_eq!(r["tokenInUrl"], serde_json::json!([]), "a token went into a URL: {r}");
    assert_eq!(r["outside"], serde_json::json!([]), "the page asked something of another origin: {r}");
    assert_eq!(r["pageErrors"], serde_json::json!([]), "{r}");
    // Every event of the trail shown once, in order — also across the dropped connection.
    for job in ["first", "second"] {
        let applied = seqs(&r[format!("{job}Applied")]);
        assert_eq!(applied, seqs(&r[format!("{job}Trace")]), "{job} job: the page's events vs the trail");
        assert!(applied.len() > 10, "{applied:?}");
        assert_eq!(r[format!("{job}Hash")], REVIEW_HASH, "{r}");
    }
    assert!(r["secondConnections"].as_u64().unwrap() >= 2, "the stream was not resumed: {r}");
    assert!(r["firstCycles"].as_u64().unwrap() >= 9 && r["firstFacts"].as_u64().unwrap() > 20, "{r}");
    assert_eq!(r["listed"], 2, "{r}");
    assert_eq!(r["tools"], 2, "{r}");
    assert!(shots.join("job.png").is_file());
}
