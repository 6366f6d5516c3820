//! evaluator: scores every strategy option that made it into the context, whichever camp proposed it.
//!
//! - **reads** `strategy/options`: the promoted proposals, `{"cost", "impact", "risk", "stance", "title"}`.
//! - **writes** `evaluation/scores`, same id as the option: `{"score", "stance", "title"}`, the score computed
//!   by the `score` tool (`agents/tools/score`: `0.5 impact + 0.3 (1 - risk) + 0.2 (1 - cost)`, rounded to two
//!   decimals), called through the host, each call in its own sandbox.
//!
//! A score depends only on its option, so when a new option arrives the evaluator scores all of them again:
//! the old scores come out identical (no-ops) and only the new one is added. An option it cannot read is
//! skipped with a warning rather than failing the scores of the others. A failed tool call fails the call
//! (`refused`, naming the tool and the option): a score is never made up.

use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, Serialize, View, log, tools};

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct StrategyOption {
    // Read by the `score` tool; parsed here too so that an unreadable option is skipped, not sent.
    #[allow(dead_code)]
    cost: f64,
    #[allow(dead_code)]
    impact: f64,
    #[allow(dead_code)]
    risk: f64,
    stance: String,
    title: String,
}

/// A score; fields in alphabetical order, so the JSON keys are sorted.
#[derive(Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Evaluation {
    score: f64,
    stance: String,
    title: String,
}

struct Evaluator;

impl Agent for Evaluator {
    fn info() -> AgentInfo {
        AgentInfo::new("evaluator", "Scores every strategy option.")
            .reads(["strategy/options"])
            .writes(["evaluation/scores"])
            .tools(["score"])
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let mut effect = Effect::new();
        for fact in ctx.facts("strategy/options") {
            match fact.parse::<StrategyOption>() {
                Ok(option) => {
                    // The option's content as it is: the tool reads the same numbers, no re-encoding between.
                    let score = score(&fact.content).map_err(|why| format!("scoring {}: {why}", fact.id))?;
                    let evaluation = Evaluation { score, stance: option.stance, title: option.title };
                    effect = effect.fact_json("evaluation/scores", fact.id, &evaluation)?;
                }
                Err(why) => log::warn(format!("not scoring: {why}")),
            }
        }
        Ok(effect)
    }
}

/// Call the `score` tool.
fn score(input: &str) -> Result<f64, String> {
    let out = tools::invoke("score", input).map_err(|e| format!("the tool score failed: {e:?}"))?;
    out.parse().map_err(|e| format!("the tool score returned {out:?}, not a number: {e}"))
}

converge_sdk::export_agent!(Evaluator);
