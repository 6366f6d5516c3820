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
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service-cache")
}
