//! Hostile guest: unbounded recursion until the wasm stack overflows. Must end as `trap`.
wit_bindgen::generate!({ world: "converge-agent", path: "../../../wit" });

#[allow(unused_imports)]
use converge::agent::context::View;
#[allow(unused_imports)]
use converge::agent::types::{AgentInfo, Effect, Fact, Proposal, Question};

struct Guest;

#[allow(dead_code)]
fn fact(key: &str, id: &str, content: impl Into<String>) -> Fact {
    Fact { key: key.into(), id: id.into(), content: content.into() }
}

#[allow(dead_code)]
fn facts(facts: Vec<Fact>) -> Effect {
    Effect { facts, proposals: vec![], questions: vec![] }
}

impl exports::converge::agent::agent::Guest for Guest {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "recurse".into(),
            description: "Hostile guest".into(),
            reads: vec![],
            writes: vec![],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        fn down(n: u64, ctx: &View) -> u64 {
            if n == u64::MAX {
                return u64::from(ctx.cycle());
            }
            let here = [n; 16];
            std::hint::black_box(&here);
            down(n + 1, ctx) + here[3]
        }
        let _ = down(0, ctx);
        Ok(facts(vec![]))
    }
}

export!(Guest);
