//! evaluator: scores every strategy option that made it into the context, whichever camp proposed it.
//!
//! - **reads** `strategy/options`: the promoted proposals, `{"cost", "impact", "risk", "stance", "title"}`.
//! - **writes** `evaluation/scores`, same id as the option: `{"score", "stance", "title"}` with
//!   `score = 0.5 impact + 0.3 (1 - risk) + 0.2 (1 - cost)`, rounded to two decimals.
//!
//! A score depends only on its option, so when a new option arrives the evaluator scores all of them again:
//! the old scores come out identical (no-ops) and only the new one is added. An option it cannot read is
//! skipped with a warning rather than failing the scores of the others.

use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, Serialize, View, log};

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct StrategyOption {
    cost: f64,
    impact: f64,
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
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let mut effect = Effect::new();
        for fact in ctx.facts("strategy/options") {
            match fact.parse::<StrategyOption>() {
                Ok(option) => effect = effect.fact_json("evaluation/scores", fact.id, &score(option))?,
                Err(why) => log::warn(format!("not scoring: {why}")),
            }
        }
        Ok(effect)
    }
}

fn score(option: StrategyOption) -> Evaluation {
    let unit = |x: f64| x.clamp(0.0, 1.0);
    let score = 0.5 * unit(option.impact) + 0.3 * (1.0 - unit(option.risk)) + 0.2 * (1.0 - unit(option.cost));
    Evaluation { score: (score * 100.0).round() / 100.0, stance: option.stance, title: option.title }
}

converge_sdk::export_agent!(Evaluator);

#[cfg(test)]
mod tests {
    use super::*;
    use converge_sdk::{Fact, serde_json};

    fn scored(option: &str) -> String {
        let option = Fact::new("strategy/options", "o", option).parse().unwrap();
        serde_json::to_string(&score(option)).unwrap()
    }

    #[test]
    fn market_entry_example() {
        let direct = r#"{"cost":0.6,"impact":0.8,"risk":0.25,"stance":"growth","title":"Direct"}"#;
        assert_eq!(scored(direct), r#"{"score":0.71,"stance":"growth","title":"Direct"}"#);
        let partner = r#"{"cost":0.35,"impact":0.6,"risk":0.23,"stance":"growth","title":"Partner"}"#;
        assert_eq!(scored(partner), r#"{"score":0.66,"stance":"growth","title":"Partner"}"#);
        let wait = r#"{"cost":0.05,"impact":0.27,"risk":0.15,"stance":"defensive","title":"Wait"}"#;
        assert_eq!(scored(wait), r#"{"score":0.58,"stance":"defensive","title":"Wait"}"#);
    }

    #[test]
    fn review_example() {
        let direct = r#"{"cost":0.6,"impact":0.75,"risk":0.6,"stance":"growth","title":"Direct"}"#;
        assert_eq!(scored(direct), r#"{"score":0.57,"stance":"growth","title":"Direct"}"#);
        let partner = r#"{"cost":0.35,"impact":0.56,"risk":0.4,"stance":"growth","title":"Partner"}"#;
        assert_eq!(scored(partner), r#"{"score":0.59,"stance":"growth","title":"Partner"}"#);
        let niche = r#"{"cost":0.3,"impact":0.44,"risk":0.26,"stance":"defensive","title":"Niche"}"#;
        assert_eq!(scored(niche), r#"{"score":0.58,"stance":"defensive","title":"Niche"}"#);
    }

    #[test]
    fn out_of_range_inputs_are_clamped() {
        let wild = r#"{"cost":-3,"impact":9,"risk":-1,"stance":"x","title":"t"}"#;
        assert_eq!(scored(wild), r#"{"score":1.0,"stance":"x","title":"t"}"#);
    }
}
