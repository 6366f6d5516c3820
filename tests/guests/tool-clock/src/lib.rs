//! Probe tool "clock": returns the wall clock (ns since the Unix epoch) and a random number from std's
//! seeded hasher. The host's clock and RNG are deterministic, so two runs print the same.
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

fn info(name: &str, description: &str) -> ToolInfo {
    ToolInfo { name: name.into(), description: description.into() }
}

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        info("clock", "Reads the clock and the RNG.")
    }

    fn invoke(input: String) -> Result<String, String> {
        use std::hash::{BuildHasher, Hasher};
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(input.as_bytes());
        Ok(format!("{} {}", now.as_nanos(), h.finish()))
    }
}

export!(Guest);
