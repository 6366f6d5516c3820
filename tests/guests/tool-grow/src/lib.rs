//! Hostile tool "grow": allocates and touches 1 MiB after 1 MiB, forever. The host must stop it at the tool's
//! memory limit (out_of_memory, recorded by the limiter).
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

fn info(name: &str, description: &str) -> ToolInfo {
    ToolInfo { name: name.into(), description: description.into() }
}

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        info("grow", "Allocates without end.")
    }

    fn invoke(_input: String) -> Result<String, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(Guest);
