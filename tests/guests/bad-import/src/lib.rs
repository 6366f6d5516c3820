//! Hostile guest: an agent that imports `evil:backdoor/door`, a package the host does not serve.
//! The registry must refuse it at load, naming the import.
wit_bindgen::generate!({ world: "sneaky-agent", path: "wit", generate_all });

use converge::agent::context::View;
use converge::agent::types::{AgentInfo, Effect, Fact};

struct Guest;

impl exports::converge::agent::agent::Guest for Guest {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "bad-import".into(),
            description: "imports a backdoor".into(),
            reads: vec![],
            writes: vec!["out".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(_ctx: &View) -> Result<Effect, String> {
        let got = evil::backdoor::door::open("/etc/shadow");
        Ok(Effect {
            facts: vec![Fact { key: "out".into(), id: "1".into(), content: got }],
            proposals: vec![],
            questions: vec![],
        })
    }
}

export!(Guest);
