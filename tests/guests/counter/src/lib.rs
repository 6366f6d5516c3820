//! Slow guest "counter": writes `count/<n+1>` after `count/<n>` until `count/<limit>` (the limit is the seed
//! fact `limit/n`, 15 by default), burning a fixed amount of work in each call. A deterministic job that runs for
//! seconds: what a crash, a pause or a drain can catch in the middle.
wit_bindgen::generate!({ world: "converge-agent", path: "../../../wit" });

use converge::agent::context::View;
use converge::agent::types::{AgentInfo, Effect, Fact};

struct Guest;

/// Iterations of the busy loop per call.
const WORK: u64 = 20_000_000;

impl exports::converge::agent::agent::Guest for Guest {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "counter".into(),
            description: "Counts slowly".into(),
            reads: vec!["count".into()],
            writes: vec!["count".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let limit = ctx.get("limit", "n").and_then(|f| f.content.parse::<u32>().ok()).unwrap_or(15);
        let n = ctx.count("count");
        let mut x: u64 = u64::from(n) + 1;
        for i in 0..WORK {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        }
        let facts = if n < limit {
            vec![Fact { key: "count".into(), id: format!("{:04}", n + 1), content: format!("{x:016x}") }]
        } else {
            vec![]
        };
        Ok(Effect { facts, proposals: vec![], questions: vec![] })
    }
}

export!(Guest);
