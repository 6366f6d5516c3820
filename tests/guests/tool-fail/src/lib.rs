//! Hostile tool "fail": panics on every call (a trap). The host answers `failed`, and after three in a row in
//! one job the tool's circuit opens (`unavailable`); validation rejects it (a trap is not an `err`).
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

fn info(name: &str, description: &str) -> ToolInfo {
    ToolInfo { name: name.into(), description: description.into() }
}

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        info("fail", "Always traps.")
    }

    fn invoke(input: String) -> Result<String, String> {
        panic!("fail was called with {input:?}");
    }
}

export!(Guest);
