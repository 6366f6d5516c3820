//! market-signals: normalises the job's raw seed signals into clean market signals, the first step of the
//! market-entry workflow.
//!
//! - **reads** `signals`: the seeds, `{"kind", "strength", "competitor"?, "source"?}`, in any casing.
//! - **writes** `market/signals`: one fact per usable seed, same id,
//!   `{"competitor"?, "kind", "source", "strength"}`.
//!
//! A kind is trimmed and lower-cased and must be `demand`, `competitor` or `regulation`; a strength is clamped to
//! [0, 1] and rounded to two decimals; a competitor signal must name its competitor. A seed that cannot be
//! normalised is skipped with a warning in the trace, never guessed at.
//!
//! Only seeds write `signals`, so this agent runs in cycle 1 and works on [`View::added`]. Each signal is a
//! function of its seed alone, so running again on the same seed could only repeat it, never conflict.

use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, Serialize, View, log};

/// A seed as the job gives it.
#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Raw {
    kind: String,
    strength: f64,
    competitor: Option<String>,
    source: Option<String>,
}

/// A normalised signal; fields in alphabetical order, so the JSON keys are sorted.
#[derive(Debug, PartialEq, Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Signal {
    #[serde(skip_serializing_if = "Option::is_none")]
    competitor: Option<String>,
    kind: String,
    source: String,
    strength: f64,
}

const KINDS: [&str; 3] = ["competitor", "demand", "regulation"];

struct MarketSignals;

impl Agent for MarketSignals {
    fn info() -> AgentInfo {
        AgentInfo::new("market-signals", "Normalises the job's seed signals into market/signals.")
            .reads(["signals"])
            .writes(["market/signals"])
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let mut effect = Effect::new();
        for fact in ctx.added("signals") {
            match fact.parse().and_then(normalise) {
                Ok(signal) => effect = effect.fact_json("market/signals", fact.id, &signal)?,
                Err(why) => log::warn(format!("skipping signals/{}: {why}", fact.id)),
            }
        }
        Ok(effect)
    }
}

fn normalise(raw: Raw) -> Result<Signal, String> {
    let kind = raw.kind.trim().to_lowercase();
    if !KINDS.contains(&kind.as_str()) {
        return Err(format!("unknown kind {kind:?}, expected one of {KINDS:?}"));
    }
    let competitor = raw.competitor.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    if kind == "competitor" && competitor.is_none() {
        return Err("a competitor signal must name the competitor".into());
    }
    let source = raw.source.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    Ok(Signal {
        competitor,
        kind,
        source: source.unwrap_or_else(|| "unknown".into()),
        strength: (raw.strength.clamp(0.0, 1.0) * 100.0).round() / 100.0,
    })
}

converge_sdk::export_agent!(MarketSignals);

#[cfg(test)]
mod tests {
    use super::*;
    use converge_sdk::Fact;

    fn signal(content: &str) -> Result<String, String> {
        let signal = Fact::new("signals", "s", content).parse().and_then(normalise)?;
        Ok(Fact::json("market/signals", "s", &signal)?.content)
    }

    #[test]
    fn normalises_kind_strength_and_names() {
        let out = signal(r#"{"kind": " Competitor ", "strength": 1.234, "competitor": " acme ", "source": "scan"}"#);
        assert_eq!(out.as_deref(), Ok(r#"{"competitor":"acme","kind":"competitor","source":"scan","strength":1.0}"#));
        let out = signal(r#"{"kind": "demand", "strength": 0.816}"#);
        assert_eq!(out.as_deref(), Ok(r#"{"kind":"demand","source":"unknown","strength":0.82}"#));
    }

    #[test]
    fn refuses_what_it_cannot_normalise() {
        assert!(signal(r#"{"kind": "rumour", "strength": 0.5}"#).is_err());
        assert!(signal(r#"{"kind": "competitor", "strength": 0.5, "competitor": " "}"#).is_err());
        assert!(signal(r#"{"kind": "demand"}"#).is_err());
    }
}
