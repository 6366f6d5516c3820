//! strategy-defensive: the defensive camp. From the market landscape it proposes two cautious options, with
//! confidences that rise with competitor pressure and regulatory weight: in a calm market the defensive camp is
//! unsure, and its proposals may fall below the job's `min_confidence`.
//!
//! - **reads** `analysis/landscape` (id `market`: `pressure`, `regulation`).
//! - **writes** `strategy/options` as *proposals*: `defensive-niche` (defend one segment: impact
//!   0.2 + 0.4 × pressure, risk 0.2 + 0.2 × regulation, cost 0.3) and `defensive-wait` (wait for regulation to
//!   settle: impact 0.1 + 0.3 × regulation, risk 0.15, cost 0.05), each
//!   `{"cost", "impact", "risk", "stance", "title"}`.
//!
//! Both options are functions of the landscape, which is written once, so proposing them again could never
//! conflict.

use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, Serialize, View};

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Landscape {
    pressure: f64,
    regulation: f64,
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

struct StrategyDefensive;

impl Agent for StrategyDefensive {
    fn info() -> AgentInfo {
        AgentInfo::new("strategy-defensive", "Proposes defensive strategy options from the market landscape.")
            .reads(["analysis/landscape"])
            .writes(["strategy/options"])
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let Some(m) = ctx.get_json::<Landscape>("analysis/landscape", "market")? else {
            return Ok(Effect::new());
        };
        let why = format!("defensive camp: competitor pressure {}, regulatory weight {}", m.pressure, m.regulation);
        let mut effect = Effect::new();
        for (id, option, confidence) in options(&m) {
            effect = effect.propose_json("strategy/options", id, &option, confidence, why.as_str())?;
        }
        Ok(effect)
    }
}

fn options(m: &Landscape) -> [Proposed; 2] {
    let (p, r) = (m.pressure.clamp(0.0, 1.0), m.regulation.clamp(0.0, 1.0));
    let niche = StrategyOption {
        cost: 0.3,
        impact: round2(0.2 + 0.4 * p),
        risk: round2(0.2 + 0.2 * r),
        stance: "defensive",
        title: "Defend one niche segment first",
    };
    let wait = StrategyOption {
        cost: 0.05,
        impact: round2(0.1 + 0.3 * r),
        risk: 0.15,
        stance: "defensive",
        title: "Wait until regulation settles",
    };
    [("defensive-niche", niche, confidence(0.2 + 0.6 * p)), ("defensive-wait", wait, confidence(0.1 + 0.8 * r))]
}

fn confidence(x: f64) -> f64 {
    round2(x.clamp(0.0, 1.0))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

converge_sdk::export_agent!(StrategyDefensive);

#[cfg(test)]
mod tests {
    use super::*;
    use converge_sdk::serde_json;

    fn proposals(pressure: f64, regulation: f64) -> Vec<(String, String, f64)> {
        let m = Landscape { pressure, regulation };
        options(&m).into_iter().map(|(id, o, c)| (id.to_owned(), serde_json::to_string(&o).unwrap(), c)).collect()
    }

    #[test]
    fn market_entry_example() {
        assert_eq!(
            proposals(0.25, 0.55),
            [
                (
                    "defensive-niche".into(),
                    r#"{"cost":0.3,"impact":0.3,"risk":0.31,"stance":"defensive","title":"Defend one niche segment first"}"#.into(),
                    0.35
                ),
                (
                    "defensive-wait".into(),
                    r#"{"cost":0.05,"impact":0.27,"risk":0.15,"stance":"defensive","title":"Wait until regulation settles"}"#.into(),
                    0.54
                ),
            ]
        );
    }

    #[test]
    fn review_example() {
        let confidences: Vec<f64> = proposals(0.6, 0.3).into_iter().map(|(_, _, c)| c).collect();
        assert_eq!(confidences, [0.56, 0.34]);
    }
}
