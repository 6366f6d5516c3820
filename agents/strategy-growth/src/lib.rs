//! strategy-growth: the growth camp. From the market landscape it proposes two ways in, each with a confidence
//! that rises with demand and falls with competitor pressure.
//!
//! - **reads** `analysis/landscape` (id `market`: `demand`, `pressure`).
//! - **writes** `strategy/options` as *proposals*: `growth-direct` (own sales team: impact = demand,
//!   risk = pressure, cost 0.6) and `growth-partner` (a distribution partner: impact 0.75 × demand,
//!   risk 0.1 + 0.5 × pressure, cost 0.35), each `{"cost", "impact", "risk", "stance", "title"}`.
//!
//! The engine promotes a proposal whose confidence reaches the job's `min_confidence`; the others are recorded
//! in the trace and never reach the evaluator. Both options are functions of the landscape, which is written
//! once, so proposing them again could never conflict.

use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, Serialize, View};

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Landscape {
    demand: f64,
    pressure: f64,
}

/// A strategy option; fields in alphabetical order, so the JSON keys are sorted.
#[derive(Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct StrategyOption {
    cost: f64,
    impact: f64,
    risk: f64,
    stance: &'static str,
    title: &'static str,
}

/// One proposal: the option's id, the option, the confidence.
type Proposed = (&'static str, StrategyOption, f64);

struct StrategyGrowth;

impl Agent for StrategyGrowth {
    fn info() -> AgentInfo {
        AgentInfo::new("strategy-growth", "Proposes growth strategy options from the market landscape.")
            .reads(["analysis/landscape"])
            .writes(["strategy/options"])
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let Some(m) = ctx.get_json::<Landscape>("analysis/landscape", "market")? else {
            return Ok(Effect::new());
        };
        let why = format!("growth camp: demand {} against competitor pressure {}", m.demand, m.pressure);
        let mut effect = Effect::new();
        for (id, option, confidence) in options(&m) {
            effect = effect.propose_json("strategy/options", id, &option, confidence, why.as_str())?;
        }
        Ok(effect)
    }
}

fn options(m: &Landscape) -> [Proposed; 2] {
    let (d, p) = (m.demand.clamp(0.0, 1.0), m.pressure.clamp(0.0, 1.0));
    let direct = StrategyOption {
        cost: 0.6,
        impact: round2(d),
        risk: round2(p),
        stance: "growth",
        title: "Enter directly with our own sales team",
    };
    let partner = StrategyOption {
        cost: 0.35,
        impact: round2(0.75 * d),
        risk: round2(0.1 + 0.5 * p),
        stance: "growth",
        title: "Enter through a distribution partner",
    };
    [
        ("growth-direct", direct, confidence(0.2 + 0.6 * d - 0.2 * p)),
        ("growth-partner", partner, confidence(0.25 + 0.5 * d - 0.1 * p)),
    ]
}

fn confidence(x: f64) -> f64 {
    round2(x.clamp(0.0, 1.0))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

converge_sdk::export_agent!(StrategyGrowth);

#[cfg(test)]
mod tests {
    use super::*;
    use converge_sdk::serde_json;

    fn proposals(demand: f64, pressure: f64) -> Vec<(String, String, f64)> {
        let m = Landscape { demand, pressure };
        options(&m).into_iter().map(|(id, o, c)| (id.to_owned(), serde_json::to_string(&o).unwrap(), c)).collect()
    }

    #[test]
    fn market_entry_example() {
        assert_eq!(
            proposals(0.8, 0.25),
            [
                (
                    "growth-direct".into(),
                    r#"{"cost":0.6,"impact":0.8,"risk":0.25,"stance":"growth","title":"Enter directly with our own sales team"}"#.into(),
                    0.63
                ),
                (
                    "growth-partner".into(),
                    r#"{"cost":0.35,"impact":0.6,"risk":0.23,"stance":"growth","title":"Enter through a distribution partner"}"#.into(),
                    0.63
                ),
            ]
        );
    }

    #[test]
    fn review_example() {
        let confidences: Vec<f64> = proposals(0.75, 0.6).into_iter().map(|(_, _, c)| c).collect();
        assert_eq!(confidences, [0.53, 0.56]);
    }
}
