//! Invariant guest (semantic): holds while `echo` has fewer than three facts.
wit_bindgen::generate!({ world: "converge-invariant", path: "../../../wit" });

use converge::agent::context::View;
use converge::agent::types::{InvariantClass, InvariantInfo};

struct Guest;

impl exports::converge::agent::invariant::Guest for Guest {
    fn info() -> InvariantInfo {
        InvariantInfo {
            name: "inv-count".into(),
            description: "echo stays small".into(),
            class: InvariantClass::Semantic,
        }
    }

    fn check(ctx: &View) -> Result<(), String> {
        let n = ctx.count("echo");
        if n >= 3 { Err(format!("echo has {n} facts, the limit is 2")) } else { Ok(()) }
    }
}

export!(Guest);
