//! Hostile pair, side B: writes `(verdict, final)` = reject. With conflict-a the job must end `conflict`.
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
            name: "conflict-b".into(),
            description: "Hostile pair, side B".into(),
            reads: vec![],
            writes: vec!["verdict".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let _ = ctx;
        Ok(facts(vec![fact("verdict", "final", "reject")]))
    }
}

export!(Guest);
