//! Hostile tool "spin": loops forever. The host must stop it on the tool's fuel limit.
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

fn info(name: &str, description: &str) -> ToolInfo {
    ToolInfo { name: name.into(), description: description.into() }
}

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        info("spin", "Never returns.")
    }

    fn invoke(input: String) -> Result<String, String> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(input.len() as u64 + 1));
            if std::hint::black_box(n) == 0 {
                return Ok(input);
            }
        }
    }
}

export!(Guest);
