//! What the test binaries share: the paths of the components `build.rs` built — the hostile and probe guests
//! of `guests/` (`GUESTS`), the example agents of `../agents/` (`AGENTS`) and the example tools of
//! `../agents/tools/` (`TOOLS`) — and the example jobs with the results they must reach. The integration tests
//! of the engine, sandbox, runtime and API live in the `it` binary (see `it/main.rs`); the CLI's, which run the
//! `converge` binary, live beside it in `host/cli/tests`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

use std::path::{Path, PathBuf};

/// `examples/market-entry.json` converges with this context hash, after [`MARKET_CYCLES`] cycles.
pub const MARKET_HASH: &str = "b66f8182e90468534f53a49eb3d30043158f25bc0a8b8b62b49aca65dbf34210";
/// Cycles of `examples/market-entry.json`.
pub const MARKET_CYCLES: u64 = 7;
/// `examples/review.json` waits on this question...
pub const REVIEW_QUESTION: &str = "strategy-choice";
/// ...and, answered with [`REVIEW_ANSWER`], converges with this hash after [`REVIEW_CYCLES`] cycles.
pub const REVIEW_ANSWER: &str = "defensive-niche";
/// The hash `examples/review.json` converges with once answered.
pub const REVIEW_HASH: &str = "76d4829d9903069623e0f1e2edac23953ec6c136daea214f518b1b2954081298";
/// Cycles of `examples/review.json`, answered.
pub const REVIEW_CYCLES: u64 = 9;

/// The text of `examples/<name>`.
///
/// # Panics
/// The example does not exist.
#[allow(clippy::panic)]
pub fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fresh `dir` holding `agents/` with every example agent and `agents/tools/` with every example tool (where
/// `converge` looks for trusted tools by default).
///
/// # Errors
/// The directory cannot be made or a component copied.
pub fn example_agents(dir: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let tools = dir.join("agents").join("tools");
    std::fs::create_dir_all(&tools)?;
    for (name, path) in AGENTS {
        std::fs::copy(path, dir.join("agents").join(format!("{name}.wasm")))?;
    }
    for (name, path) in TOOLS {
        std::fs::copy(path, tools.join(format!("{name}.wasm")))?;
    }
    Ok(())
}
