//! Probe agent "tool-caller": for each fact added under `calls` (content `TOOL\nINPUT`), in id order, invokes
//! the tool and writes `results/<id>`: `ok:<output>`, or `denied:`, `unknown:`, `failed:`, `unavailable:` and
//! the host's message. Besides the hostile test tools it declares the Python and JavaScript example tools of
//! `examples/tools`, which `scripts/polyglot-tools` calls through it.
wit_bindgen::generate!({ world: "converge-agent", path: "../../../wit" });

use converge::agent::context::View;
use converge::agent::tools::invoke;
use converge::agent::types::{AgentInfo, Effect, Fact, ToolError};

/// The hostile tools of `tests/guests`, then the Python and JavaScript tools of `examples/tools`.
const TOOLS: [&str; 12] = [
    "upper",
    "fail",
    "spin",
    "grow",
    "huge",
    "snoop",
    "clock",
    "recurse",
    "py-wordcount",
    "py-snoop",
    "js-median",
    "js-spin",
];

struct Guest;

impl exports::converge::agent::agent::Guest for Guest {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "tool-caller".into(),
            description: "Calls the tools its input names.".into(),
            reads: vec!["calls".into()],
            writes: vec!["results".into()],
            tools: TOOLS.map(String::from).to_vec(),
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let mut facts = Vec::new();
        for call in ctx.added("calls") {
            let (tool, input) = call.content.split_once('\n').unwrap_or((call.content.as_str(), ""));
            let content = match invoke(tool, input) {
                Ok(out) => format!("ok:{out}"),
                Err(ToolError::Denied(m)) => format!("denied:{m}"),
                Err(ToolError::Unknown(m)) => format!("unknown:{m}"),
                Err(ToolError::Failed(m)) => format!("failed:{m}"),
                Err(ToolError::Unavailable(m)) => format!("unavailable:{m}"),
            };
            facts.push(Fact { key: "results".into(), id: call.id.clone(), content });
        }
        Ok(Effect { facts, proposals: vec![], questions: vec![] })
    }
}

export!(Guest);
