//! Constructors and builders for the WIT records, so an agent writes `Effect::new().fact(..)` instead of
//! filling struct literals.
//!
//! Builders only assemble values: they check nothing. The engine validates an effect as a whole (declared
//! `writes`, well-formed keys and ids, sizes, confidence in [0, 1]) and rejects all of it on any breach.

use crate::{AgentInfo, Effect, Fact, InvariantClass, InvariantInfo, Proposal, Question, ToolInfo};

impl Fact {
    /// The fact `(key, id)` with `content`.
    ///
    /// ```
    /// let f = converge_sdk::Fact::new("market/signals", "s1", "{}");
    /// assert_eq!((f.key.as_str(), f.id.as_str()), ("market/signals", "s1"));
    /// ```
    pub fn new(key: impl Into<String>, id: impl Into<String>, content: impl Into<String>) -> Self {
        Self { key: key.into(), id: id.into(), content: content.into() }
    }
}

impl Proposal {
    /// A proposal of `fact` with `confidence` in [0, 1] and a `rationale` for the trace.
    pub fn new(fact: Fact, confidence: f64, rationale: impl Into<String>) -> Self {
        Self { fact, confidence, rationale: rationale.into() }
    }
}

impl Question {
    /// A question for a human; its answer arrives as the fact `answers/<id>`.
    pub fn new(id: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self { id: id.into(), prompt: prompt.into() }
    }
}

impl Default for Effect {
    fn default() -> Self {
        Self::new()
    }
}

impl Effect {
    /// An effect that adds nothing: what an agent returns when there is nothing to do.
    pub fn new() -> Self {
        Self { facts: Vec::new(), proposals: Vec::new(), questions: Vec::new() }
    }

    /// Add the fact `(key, id)` with `content`.
    ///
    /// ```
    /// use converge_sdk::{Effect, Fact};
    ///
    /// let effect = Effect::new()
    ///     .fact("analysis/competitors", "acme", r#"{"pressure":0.7}"#)
    ///     .propose(Fact::new("strategy/options", "niche", "{}"), 0.8, "low pressure in the niche")
    ///     .ask("pick", "Which option should we pursue?");
    /// assert_eq!((effect.facts.len(), effect.proposals.len(), effect.questions.len()), (1, 1, 1));
    /// ```
    #[must_use]
    pub fn fact(self, key: impl Into<String>, id: impl Into<String>, content: impl Into<String>) -> Self {
        self.with_fact(Fact::new(key, id, content))
    }

    /// Add a fact built elsewhere.
    #[must_use]
    pub fn with_fact(mut self, fact: Fact) -> Self {
        self.facts.push(fact);
        self
    }

    /// Propose `fact` with `confidence` in [0, 1]: it enters the context only if `confidence` reaches the
    /// job's `min_confidence`.
    #[must_use]
    pub fn propose(mut self, fact: Fact, confidence: f64, rationale: impl Into<String>) -> Self {
        self.proposals.push(Proposal::new(fact, confidence, rationale));
        self
    }

    /// Ask a human the question `id`. A question opens once per job; the answer arrives as `answers/<id>`.
    #[must_use]
    pub fn ask(mut self, id: impl Into<String>, prompt: impl Into<String>) -> Self {
        self.questions.push(Question::new(id, prompt));
        self
    }

    /// Whether the effect adds nothing.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty() && self.proposals.is_empty() && self.questions.is_empty()
    }
}

impl AgentInfo {
    /// An agent named `name` (1-64 characters of `[a-z0-9_-]`) that reads, writes and calls nothing and is not
    /// required; add those with the builder methods.
    ///
    /// ```
    /// let info = converge_sdk::AgentInfo::new("evaluator", "Scores every strategy option.")
    ///     .reads(["strategy/options"])
    ///     .writes(["evaluation/scores"]);
    /// assert_eq!(info.writes, ["evaluation/scores"]);
    /// assert!(!info.required);
    /// ```
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            reads: Vec::new(),
            writes: Vec::new(),
            tools: Vec::new(),
            required: false,
        }
    }

    /// Add keys whose new facts make the agent run in the next cycle.
    #[must_use]
    pub fn reads<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.reads.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Add keys the agent may write; an effect that writes any other key is rejected whole.
    #[must_use]
    pub fn writes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.writes.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Add tools the agent may call through [`tools::invoke`](crate::tools::invoke).
    #[must_use]
    pub fn tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.tools.extend(names.into_iter().map(Into::into));
        self
    }

    /// Make the agent required: its failure ends the job with status `agent_failed`.
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

impl InvariantInfo {
    /// An invariant named `name` of class `class`: `Structural` and `Semantic` run after every cycle,
    /// `Acceptance` at the fixed point.
    pub fn new(name: impl Into<String>, description: impl Into<String>, class: InvariantClass) -> Self {
        Self { name: name.into(), description: description.into(), class }
    }
}

impl ToolInfo {
    /// A tool named `name`.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self { name: name.into(), description: description.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effect_builder_collects_in_order() {
        let e = Effect::new()
            .fact("k", "b", "2")
            .fact("k", "a", "1")
            .propose(Fact::new("p", "x", "c"), 0.75, "why")
            .ask("q", "prompt?");
        assert_eq!(e.facts, [Fact::new("k", "b", "2"), Fact::new("k", "a", "1")]);
        assert_eq!(e.proposals, [Proposal::new(Fact::new("p", "x", "c"), 0.75, "why")]);
        assert_eq!(e.questions, [Question::new("q", "prompt?")]);
        assert!(!e.is_empty());
        assert!(Effect::default().is_empty());
    }

    #[test]
    fn agent_info_builder() {
        let info = AgentInfo::new("a", "d").reads(["x", "y"]).writes(vec![String::from("z")]).tools(["t"]).required();
        assert_eq!(info.reads, ["x", "y"]);
        assert_eq!(info.writes, ["z"]);
        assert_eq!(info.tools, ["t"]);
        assert!(info.required);
    }

    #[test]
    fn invariant_and_tool_info() {
        let i = InvariantInfo::new("i", "d", InvariantClass::Acceptance);
        assert_eq!(i.class, InvariantClass::Acceptance);
        assert_eq!(ToolInfo::new("t", "d").name, "t");
    }
}
