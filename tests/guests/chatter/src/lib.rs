//! Hostile guest: prints 4 MiB to stdout and logs without end. Output must be capped, the call must succeed.
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
            name: "chatter".into(),
            description: "Hostile guest".into(),
            reads: vec![],
            writes: vec!["out".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let line = "y".repeat(1023);
        for _ in 0..4096 {
            println!("{line}");
        }
        for i in 0..10_000u32 {
            converge::agent::log::log(converge::agent::types::Level::Info, &format!("log line {i} {line}"));
        }
        let _ = ctx;
        Ok(facts(vec![fact("out", "done", "yes")]))
    }
}

export!(Guest);
