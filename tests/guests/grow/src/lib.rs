//! Hostile guest: allocates until the memory limit refuses a grow. Must end as `out_of_memory`.
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
            name: "grow".into(),
            description: "Hostile guest".into(),
            reads: vec![],
            writes: vec!["out".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            chunk[0] = u8::try_from(hoard.len() % 251).unwrap_or(0);
            hoard.push(chunk);
            if hoard.len() == usize::MAX {
                break;
            }
        }
        let _ = ctx;
        Ok(facts(vec![fact("out", "n", hoard.len().to_string())]))
    }
}

export!(Guest);
