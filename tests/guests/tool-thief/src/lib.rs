//! Hostile guest: calls a tool it did not declare and records what the host answered (must be `denied`).
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
            name: "tool-thief".into(),
            description: "Hostile guest".into(),
            reads: vec![],
            writes: vec!["out".into()],
            tools: vec!["declared-tool".into()],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let _ = ctx;
        let answer = match converge::agent::tools::invoke("undeclared-tool", "steal") {
            Ok(out) => format!("ok:{out}"),
            Err(e) => format!("{e:?}"),
        };
        Ok(facts(vec![fact("out", "answer", answer)]))
    }
}

export!(Guest);
