//! `serde_json` helpers (feature `json`, on by default): write a fact's content from a value, read it back as
//! a type, with errors as `String`s that name the fact, ready to return from `execute` with `?`.
//!
//! `serde_json` objects are `BTreeMap`s here (its `preserve_order` feature is off), so serialised content is
//! byte-identical from run to run: the same value always makes the same fact, never a conflict with itself.

use crate::{Effect, Fact, View};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

fn to_json<T: Serialize + ?Sized>(key: &str, id: &str, value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| format!("cannot serialise {key}/{id} as JSON: {e}"))
}

impl Fact {
    /// The fact `(key, id)` whose content is `value` as compact JSON.
    ///
    /// # Errors
    /// When `value` cannot be serialised (a map with non-string keys, a failing `Serialize`).
    ///
    /// ```
    /// let f = converge_sdk::Fact::json("evaluation/scores", "niche", &converge_sdk::json!({"score": 0.72}))?;
    /// assert_eq!(f.content, r#"{"score":0.72}"#);
    /// # Ok::<(), String>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(
        key: impl Into<String>,
        id: impl Into<String>,
        value: &T,
    ) -> Result<Self, String> {
        let (key, id) = (key.into(), id.into());
        let content = to_json(&key, &id, value)?;
        Ok(Self { key, id, content })
    }

    /// The content parsed as JSON into `T`.
    ///
    /// # Errors
    /// A message naming the fact when the content is not JSON of the shape of `T`.
    ///
    /// ```
    /// let f = converge_sdk::Fact::new("signals", "s1", r#"{"strength": 0.8}"#);
    /// let v: converge_sdk::serde_json::Value = f.parse()?;
    /// assert_eq!(v["strength"], 0.8);
    /// assert!(converge_sdk::Fact::new("signals", "s2", "oops").parse::<f64>().is_err());
    /// # Ok::<(), String>(())
    /// ```
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.content)
            .map_err(|e| format!("{}/{}: content is not the JSON expected: {e}", self.key, self.id))
    }
}

impl Effect {
    /// Add the fact `(key, id)` whose content is `value` as JSON.
    ///
    /// # Errors
    /// When `value` cannot be serialised.
    pub fn fact_json<T: Serialize + ?Sized>(
        self,
        key: impl Into<String>,
        id: impl Into<String>,
        value: &T,
    ) -> Result<Self, String> {
        Ok(self.with_fact(Fact::json(key, id, value)?))
    }

    /// Propose the fact `(key, id)` whose content is `value` as JSON, with `confidence` and `rationale`.
    ///
    /// # Errors
    /// When `value` cannot be serialised.
    pub fn propose_json<T: Serialize + ?Sized>(
        self,
        key: impl Into<String>,
        id: impl Into<String>,
        value: &T,
        confidence: f64,
        rationale: impl Into<String>,
    ) -> Result<Self, String> {
        Ok(self.propose(Fact::json(key, id, value)?, confidence, rationale))
    }
}

impl View {
    /// The fact `(key, id)`, parsed as JSON into `T`; `None` when absent.
    ///
    /// # Errors
    /// A message naming the fact when it is present but not JSON of the shape of `T`.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str, id: &str) -> Result<Option<T>, String> {
        self.get(key, id).map(|f| f.parse()).transpose()
    }

    /// Every fact under `key`, parsed as JSON into `T`, by id.
    ///
    /// # Errors
    /// A message naming the first fact that is not JSON of the shape of `T`.
    pub fn facts_json<T: DeserializeOwned>(&self, key: &str) -> Result<BTreeMap<String, T>, String> {
        self.facts(key).into_iter().map(|f| Ok((f.id.clone(), f.parse()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Effect, Fact};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Score {
        option: String,
        score: f64,
    }

    #[test]
    fn round_trip() {
        let s = Score { option: "niche".into(), score: 0.5 };
        let f = Fact::json("evaluation/scores", "niche", &s).unwrap();
        assert_eq!(f.content, r#"{"option":"niche","score":0.5}"#);
        assert_eq!(f.parse::<Score>().unwrap(), s);
    }

    #[test]
    fn parse_error_names_the_fact() {
        let err = Fact::new("k", "i", "{").parse::<Score>().unwrap_err();
        assert!(err.starts_with("k/i: "), "{err}");
    }

    #[test]
    fn effect_json_builders() {
        let e =
            Effect::new().fact_json("k", "a", &1).and_then(|e| e.propose_json("p", "b", &[1, 2], 0.9, "r")).unwrap();
        assert_eq!(e.facts[0].content, "1");
        assert_eq!(e.proposals[0].fact.content, "[1,2]");
    }

    #[test]
    fn serialisation_errors_are_reported() {
        let mut m = std::collections::BTreeMap::new();
        m.insert((1, 2), 3);
        assert!(Fact::json("k", "i", &m).is_err());
    }
}
