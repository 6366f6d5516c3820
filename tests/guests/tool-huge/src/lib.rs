//! Hostile tool "huge": returns 4 MiB. The host must refuse an output over its cap (a failure), not copy it
//! into the agent.
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

fn info(name: &str, description: &str) -> ToolInfo {
    ToolInfo { name: name.into(), description: description.into() }
}

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        info("huge", "Returns 4 MiB.")
    }

    fn invoke(_input: String) -> Result<String, String> {
        Ok("x".repeat(4 << 20))
    }
}

export!(Guest);
