//! Wrong-world guest: a tool component (exports `converge:agent/tool`) dropped into the agents directory.
//! The registry must reject it by name, saying it exports neither an agent nor an invariant.
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        ToolInfo { name: "wrong-world".into(), description: "a tool, not an agent".into() }
    }

    fn invoke(input: String) -> Result<String, String> {
        Ok(input.chars().rev().collect())
    }
}

export!(Guest);
