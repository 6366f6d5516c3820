//! score: the evaluator's scoring rule as a tool, a pure function of its input.
//!
//! - **input**: a strategy option as JSON with the numbers `cost`, `impact` and `risk`; other fields (the
//!   option's `stance`, `title`) are ignored, so an option fact's content can be passed as it is.
//! - **output**: `0.5 impact + 0.3 (1 - risk) + 0.2 (1 - cost)`, each number clamped to [0, 1] first, rounded to
//!   two decimals, as a JSON number (`0.71`, `1.0`).
//! - **error**: an input that is not such an object, with the reason.
//!
//! It touches nothing outside itself: no files, environment, clock or network.

use converge_sdk::{Deserialize, Tool, ToolInfo, serde_json};

/// The numbers of an option that the score depends on.
#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Figures {
    cost: f64,
    impact: f64,
    risk: f64,
}

struct Score;

impl Tool for Score {
    fn info() -> ToolInfo {
        ToolInfo::new("score", "Scores a strategy option: 0.5 impact + 0.3 (1 - risk) + 0.2 (1 - cost).")
    }

    fn invoke(input: String) -> Result<String, String> {
        score(&input)
    }
}

fn score(input: &str) -> Result<String, String> {
    let f: Figures = serde_json::from_str(input)
        .map_err(|e| format!("the input is not an option with the numbers cost, impact and risk: {e}"))?;
    let unit = |x: f64| x.clamp(0.0, 1.0);
    let score = 0.5 * unit(f.impact) + 0.3 * (1.0 - unit(f.risk)) + 0.2 * (1.0 - unit(f.cost));
    serde_json::to_string(&((score * 100.0).round() / 100.0)).map_err(|e| format!("the score is not a number: {e}"))
}

converge_sdk::export_tool!(Score);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_entry_example() {
        let direct = r#"{"cost":0.6,"impact":0.8,"risk":0.25,"stance":"growth","title":"Direct"}"#;
        assert_eq!(score(direct).unwrap(), "0.71");
        let partner = r#"{"cost":0.35,"impact":0.6,"risk":0.23,"stance":"growth","title":"Partner"}"#;
        assert_eq!(score(partner).unwrap(), "0.66");
        let wait = r#"{"cost":0.05,"impact":0.27,"risk":0.15,"stance":"defensive","title":"Wait"}"#;
        assert_eq!(score(wait).unwrap(), "0.58");
    }

    #[test]
    fn review_example() {
        assert_eq!(score(r#"{"cost":0.6,"impact":0.75,"risk":0.6}"#).unwrap(), "0.57");
        assert_eq!(score(r#"{"cost":0.35,"impact":0.56,"risk":0.4}"#).unwrap(), "0.59");
        assert_eq!(score(r#"{"cost":0.3,"impact":0.44,"risk":0.26}"#).unwrap(), "0.58");
    }

    #[test]
    fn out_of_range_inputs_are_clamped() {
        assert_eq!(score(r#"{"cost":-3,"impact":9,"risk":-1,"stance":"x","title":"t"}"#).unwrap(), "1.0");
        assert_eq!(score(r#"{"cost":5,"impact":-2,"risk":7}"#).unwrap(), "0.0");
    }

    #[test]
    fn bad_input_is_an_error() {
        for input in ["", "0.5", r#"{"cost":0.1,"impact":0.2}"#, r#"{"cost":"high","impact":0.2,"risk":0.1}"#] {
            let err = score(input).unwrap_err();
            assert!(err.starts_with("the input is not an option"), "{input}: {err}");
        }
    }

    /// The manifest that `converge validate-tool` checks the component against says what this crate does.
    #[test]
    fn the_manifest_tests_pass() {
        let manifest: serde_json::Value = serde_json::from_str(include_str!("../manifest.json")).unwrap();
        assert_eq!(manifest["name"], Score::info().name.as_str());
        let tests = manifest["tests"].as_array().unwrap();
        assert!(tests.len() >= 3);
        for t in tests {
            let (name, out, expect) = (&t["name"], score(t["input"].as_str().unwrap()), &t["expect"]);
            if let Some(ok) = expect["ok"].as_str() {
                assert_eq!(out.as_deref(), Ok(ok), "{name}");
            } else if let Some(part) = expect["contains"].as_str() {
                assert!(out.as_ref().is_ok_and(|o| o.contains(part)), "{name}: {out:?}");
            } else {
                assert_eq!(expect["error"], true, "{name}");
                assert!(out.is_err(), "{name}: {out:?}");
            }
        }
    }
}
