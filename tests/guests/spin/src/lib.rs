//! Hostile guest: loops forever in `execute`. Must end as `out_of_fuel` (or `deadline` with ample fuel).
wit_bindgen::generate!({ world: "converge-agent", path: "../../../wit" });

use converge::agent::context::View;
use converge::agent::types::{AgentInfo, Effect};

struct Guest;

impl exports::converge::agent::agent::Guest for Guest {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "spin".into(),
            description: "loops forever".into(),
            reads: vec![],
            writes: vec![],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let mut n = u64::from(ctx.cycle());
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
            if n == 0 {
                break;
            }
        }
        Ok(Effect { facts: vec![], proposals: vec![], questions: vec![] })
    }
}

export!(Guest);
