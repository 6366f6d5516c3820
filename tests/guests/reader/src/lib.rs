//! Probe guest: reads the context through the view (get, facts, added, count, keys) and writes what it read.
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
            name: "reader".into(),
            description: "Probe guest".into(),
            reads: vec!["in".into()],
            writes: vec!["echo".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let mut out = Vec::new();
        for f in ctx.added("in") {
            out.push(fact("echo", &f.id, format!("{}|count={}", f.content, ctx.count("in"))));
        }
        let keys = ctx.keys().join(",");
        let got = ctx.get("in", "1").map_or_else(|| "none".to_owned(), |f| f.content);
        out.push(fact("echo", &format!("meta@{}", ctx.cycle()), format!("goal={};keys={keys};get={got}", ctx.goal())));
        Ok(facts(out))
    }
}

export!(Guest);
