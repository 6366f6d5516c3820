//! What the service tests share: the example agents in a fresh directory, one compiled-code cache, the
//! examples and the context hashes they must reach.
#![allow(dead_code)]

use std::path::PathBuf;

/// `examples/market-entry.json` converges with this context hash, after [`MARKET_CYCLES`] cycles.
pub const MARKET_HASH: &str = "b66f8182e90468534f53a49eb3d30043158f25bc0a8b8b62b49aca65dbf34210";
pub const MARKET_CYCLES: u64 = 7;
/// `examples/review.json` waits on this question...
pub const REVIEW_QUESTION: &str = "strategy-choice";
/// ...and, answered with [`REVIEW_ANSWER`], converges with this hash after [`REVIEW_CYCLES`] cycles.
pub const REVIEW_ANSWER: &str = "defensive-niche";
pub const REVIEW_HASH: &str = "76d4829d9903069623e0f1e2edac23953ec6c136daea214f518b1b2954081298";
pub const REVIEW_CYCLES: u64 = 9;

/// A fresh directory `<tmp>/<area>/<test>` holding `agents/` with every example agent.
pub fn test_dir(area: &str, test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(area).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    for (name, path) in converge_tests::AGENTS {
        std::fs::copy(path, dir.join("agents").join(format!("{name}.wasm"))).unwrap();
    }
    // The example tools, where `converge` looks by default (`<agents>/tools`).
    std::fs::create_dir_all(dir.join("agents").join("tools")).unwrap();
    for (name, path) in converge_tests::TOOLS {
        std::fs::copy(path, dir.join("agents").join("tools").join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// The compiled-code cache every service test shares, so each component is compiled once.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service-cache")
}

/// The text of `examples/<name>`.
pub fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
