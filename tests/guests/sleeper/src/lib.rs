//! Hostile guest: sleeps for an hour, then blocks on a pollable that would never fire in real time. Under
//! the host's virtual clock both return at once; the fact records how much virtual time passed.

wit_bindgen::generate!({ world: "converge-agent", path: "../../../wit" });

use converge::agent::context::View;
use converge::agent::types::{AgentInfo, Effect, Fact};

struct Guest;

impl exports::converge::agent::agent::Guest for Guest {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "sleeper".into(),
            description: "Hostile guest".into(),
            reads: vec![],
            writes: vec!["slept".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let _ = ctx;
        let start = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_secs(3600));
        let elapsed = start.elapsed().as_secs();
        Ok(Effect {
            facts: vec![Fact { key: "slept".into(), id: "1".into(), content: elapsed.to_string() }],
            proposals: vec![],
            questions: vec![],
        })
    }
}

export!(Guest);
