//! rank: orders scored options, best first, a pure function of its input.
//!
//! - **input**: a JSON list of objects, each with a string `option` (its id) and a numeric `score`, plus any
//!   other fields (the report sends `stance` and `title`).
//! - **output**: the same objects as a JSON list, every field kept, by score from highest to lowest, equal
//!   scores by id; each object's keys come out sorted.
//! - **error**: an input that is not such a list, with the reason.
//!
//! The order is total and depends only on the input, never on the order the options come in. It touches nothing
//! outside itself: no files, environment, clock or network.

use converge_sdk::serde_json::{self, Map, Value};
use converge_sdk::{Tool, ToolInfo};

struct Rank;

impl Tool for Rank {
    fn info() -> ToolInfo {
        ToolInfo::new("rank", "Ranks scored options by score (highest first), then by option id.")
    }

    fn invoke(input: String) -> Result<String, String> {
        rank(&input)
    }
}

fn rank(input: &str) -> Result<String, String> {
    let items: Vec<Map<String, Value>> = serde_json::from_str(input)
        .map_err(|e| format!("the input is not a list of scored options (JSON objects): {e}"))?;
    let mut ranked = Vec::with_capacity(items.len());
    for (n, item) in items.into_iter().enumerate() {
        let option = item.get("option").and_then(Value::as_str).map(str::to_owned);
        let score = item.get("score").and_then(Value::as_f64);
        let (Some(option), Some(score)) = (option, score) else {
            return Err(format!("the input's item {n} lacks a string option or a numeric score"));
        };
        ranked.push((score, option, item));
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let ranked: Vec<Map<String, Value>> = ranked.into_iter().map(|(_, _, item)| item).collect();
    serde_json::to_string(&ranked).map_err(|e| format!("the ranking cannot be written: {e}"))
}

converge_sdk::export_tool!(Rank);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_entry_example() {
        let scored = r#"[{"option":"defensive-wait","score":0.58,"stance":"defensive","title":"Wait"},
            {"option":"growth-direct","score":0.71,"stance":"growth","title":"Direct"},
            {"option":"growth-partner","score":0.66,"stance":"growth","title":"Partner"}]"#;
        assert_eq!(
            rank(scored).unwrap(),
            r#"[{"option":"growth-direct","score":0.71,"stance":"growth","title":"Direct"},{"option":"growth-partner","score":0.66,"stance":"growth","title":"Partner"},{"option":"defensive-wait","score":0.58,"stance":"defensive","title":"Wait"}]"#
        );
    }

    #[test]
    fn ties_go_to_the_first_id_whatever_the_input_order() {
        let a = r#"[{"option":"b","score":0.5},{"option":"a","score":0.5},{"option":"c","score":0.6}]"#;
        let b = r#"[{"option":"c","score":0.6},{"option":"a","score":0.5},{"option":"b","score":0.5}]"#;
        let expected = r#"[{"option":"c","score":0.6},{"option":"a","score":0.5},{"option":"b","score":0.5}]"#;
        assert_eq!(rank(a).unwrap(), expected);
        assert_eq!(rank(b).unwrap(), expected);
        assert_eq!(rank("[]").unwrap(), "[]");
    }

    #[test]
    fn bad_input_is_an_error() {
        for input in ["", r#"{"option":"a","score":1}"#, "[1]"] {
            let err = rank(input).unwrap_err();
            assert!(err.starts_with("the input is not a list"), "{input}: {err}");
        }
        for input in [r#"[{"option":"a"}]"#, r#"[{"option":"a","score":"high"}]"#, r#"[{"option":1,"score":1}]"#] {
            let err = rank(input).unwrap_err();
            assert!(err.contains("item 0 lacks"), "{input}: {err}");
        }
    }

    /// The manifest that `converge validate-tool` checks the component against says what this crate does.
    #[test]
    fn the_manifest_tests_pass() {
        let manifest: serde_json::Value = serde_json::from_str(include_str!("../manifest.json")).unwrap();
        assert_eq!(manifest["name"], Rank::info().name.as_str());
        let tests = manifest["tests"].as_array().unwrap();
        assert!(tests.len() >= 3);
        for t in tests {
            let (name, out, expect) = (&t["name"], rank(t["input"].as_str().unwrap()), &t["expect"]);
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
