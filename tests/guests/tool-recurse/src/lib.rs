//! Hostile tool "recurse": recurses without end. The host must stop it at the wasm stack limit (a trap, so
//! `failed`), and survive: the tool runs nested inside the calling agent's host call.
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

#[inline(never)]
#[allow(unconditional_recursion)] // the point: it never returns
fn down(n: u64, pad: &mut [u64; 32]) -> u64 {
    pad[(n % 32) as usize] = n;
    let mut next = [0u64; 32];
    std::hint::black_box(&mut next);
    down(n + 1, &mut next) + std::hint::black_box(pad[0])
}

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        ToolInfo { name: "recurse".into(), description: "Recurses without end.".into() }
    }

    fn invoke(_input: String) -> Result<String, String> {
        let mut pad = [0u64; 32];
        Ok(down(0, &mut pad).to_string())
    }
}

export!(Guest);
