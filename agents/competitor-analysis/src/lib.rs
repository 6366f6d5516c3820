//! competitor-analysis: turns the market signals into a picture of the market that the strategy camps share.
//!
//! - **reads** `market/signals` (every signal) and `analysis/landscape` (to see whether it wrote it already).
//! - **writes** `analysis/competitors`: one fact per competitor, id its name, `{"name", "pressure", "signals"}`
//!   where `pressure` is the mean strength of its signals; and `analysis/landscape`, id `market`:
//!   `{"competitors", "demand", "leader", "pressure", "regulation"}`: mean demand, the number of competitors,
//!   the strongest one (`leader`, ties to the first name) and its pressure, mean regulatory weight.
//!
//! The landscape summarises every signal, so it is written once: a later run finds it and adds nothing rather
//! than a second, different summary, which would be a conflict. (Its own write makes it run once more, for
//! nothing, because it reads `analysis/landscape`.)

use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, Serialize, View};
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Signal {
    kind: String,
    strength: f64,
    competitor: Option<String>,
}

/// One competitor; fields in alphabetical order, so the JSON keys are sorted.
#[derive(Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Competitor {
    name: String,
    pressure: f64,
    signals: usize,
}

/// The market as a whole; fields in alphabetical order.
#[derive(Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Landscape {
    competitors: usize,
    demand: f64,
    leader: Option<String>,
    pressure: f64,
    regulation: f64,
}

struct CompetitorAnalysis;

impl Agent for CompetitorAnalysis {
    fn info() -> AgentInfo {
        AgentInfo::new("competitor-analysis", "Turns market signals into competitor pressure and a market landscape.")
            .reads(["market/signals", "analysis/landscape"])
            .writes(["analysis/competitors", "analysis/landscape"])
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        if ctx.get("analysis/landscape", "market").is_some() {
            return Ok(Effect::new());
        }
        let signals = ctx.facts_json::<Signal>("market/signals")?;
        if signals.is_empty() {
            return Ok(Effect::new());
        }
        let (competitors, landscape) = analyse(signals.into_values());
        let mut effect = Effect::new();
        for competitor in &competitors {
            effect = effect.fact_json("analysis/competitors", competitor.name.as_str(), competitor)?;
        }
        effect.fact_json("analysis/landscape", "market", &landscape)
    }
}

fn analyse(signals: impl IntoIterator<Item = Signal>) -> (Vec<Competitor>, Landscape) {
    let (mut demand, mut regulation) = (Vec::new(), Vec::new());
    let mut by_name: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for signal in signals {
        match (signal.kind.as_str(), signal.competitor) {
            ("demand", _) => demand.push(signal.strength),
            ("regulation", _) => regulation.push(signal.strength),
            ("competitor", Some(name)) => by_name.entry(name).or_default().push(signal.strength),
            _ => {}
        }
    }
    let competitors: Vec<Competitor> = by_name
        .into_iter()
        .map(|(name, strengths)| Competitor { pressure: mean(&strengths), signals: strengths.len(), name })
        .collect();
    // The first competitor with the highest pressure, in name order.
    let leader = competitors.iter().fold(None, |top: Option<&Competitor>, c| match top {
        Some(t) if t.pressure >= c.pressure => Some(t),
        _ => Some(c),
    });
    let landscape = Landscape {
        competitors: competitors.len(),
        demand: mean(&demand),
        leader: leader.map(|c| c.name.clone()),
        pressure: leader.map_or(0.0, |c| c.pressure),
        regulation: mean(&regulation),
    };
    (competitors, landscape)
}

/// The mean, rounded to two decimals; 0 for no values.
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let (sum, n) = values.iter().fold((0.0, 0.0), |(sum, n), v| (sum + v, n + 1.0));
    (sum / n * 100.0).round() / 100.0
}

converge_sdk::export_agent!(CompetitorAnalysis);

#[cfg(test)]
mod tests {
    use super::*;
    use converge_sdk::serde_json;

    fn signal(kind: &str, strength: f64, competitor: Option<&str>) -> Signal {
        Signal { kind: kind.into(), strength, competitor: competitor.map(Into::into) }
    }

    fn analyse_json(signals: Vec<Signal>) -> (Vec<String>, String) {
        let (competitors, landscape) = analyse(signals);
        let competitors = competitors.iter().map(|c| serde_json::to_string(c).unwrap()).collect();
        (competitors, serde_json::to_string(&landscape).unwrap())
    }

    #[test]
    fn market_entry_example() {
        let (competitors, landscape) = analyse_json(vec![
            signal("competitor", 0.3, Some("acme")),
            signal("competitor", 0.2, Some("acme")),
            signal("demand", 0.82, None),
            signal("demand", 0.78, None),
            signal("competitor", 0.15, Some("globex")),
            signal("regulation", 0.6, None),
            signal("regulation", 0.5, None),
        ]);
        assert_eq!(
            competitors,
            [r#"{"name":"acme","pressure":0.25,"signals":2}"#, r#"{"name":"globex","pressure":0.15,"signals":1}"#]
        );
        assert_eq!(landscape, r#"{"competitors":2,"demand":0.8,"leader":"acme","pressure":0.25,"regulation":0.55}"#);
    }

    #[test]
    fn review_example() {
        let (_, landscape) = analyse_json(vec![
            signal("demand", 0.8, None),
            signal("demand", 0.7, None),
            signal("competitor", 0.65, Some("acme")),
            signal("competitor", 0.55, Some("acme")),
            signal("competitor", 0.4, Some("globex")),
            signal("regulation", 0.3, None),
        ]);
        assert_eq!(landscape, r#"{"competitors":2,"demand":0.75,"leader":"acme","pressure":0.6,"regulation":0.3}"#);
    }

    #[test]
    fn ties_go_to_the_first_name_and_nothing_is_zero() {
        let (_, landscape) =
            analyse_json(vec![signal("competitor", 0.5, Some("b")), signal("competitor", 0.5, Some("a"))]);
        assert_eq!(landscape, r#"{"competitors":2,"demand":0.0,"leader":"a","pressure":0.5,"regulation":0.0}"#);
        let (_, landscape) = analyse_json(vec![]);
        assert_eq!(landscape, r#"{"competitors":0,"demand":0.0,"leader":null,"pressure":0.0,"regulation":0.0}"#);
    }
}
