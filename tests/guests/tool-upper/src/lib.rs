//! Probe tool "upper": upper-cases its input; an empty input is an `err`. Touches nothing outside itself, so
//! its validation lists no attempts and, with three passing tests, is `accepted`.
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

fn info(name: &str, description: &str) -> ToolInfo {
    ToolInfo { name: name.into(), description: description.into() }
}

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        info("upper", "Upper-cases its input.")
    }

    fn invoke(input: String) -> Result<String, String> {
        if input.is_empty() {
            return Err("empty input".into());
        }
        Ok(input.to_uppercase())
    }
}

export!(Guest);
