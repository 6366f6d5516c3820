//! report: writes the job's one summary, once the decision is made.
//!
//! - **reads** `decision/final` (id `strategy`, the trigger), `evaluation/scores` (every option, for the
//!   ranking), `analysis/landscape` (id `market`, for context, when there is one) and `report` (to see whether
//!   it wrote the summary already).
//! - **writes** `report`, id `summary`, once:
//!   `{"decision", "goal", "landscape", "options", "summary"}`: the decision as governance made it, the job's
//!   goal, the market landscape (or `null`), every scored option ranked by score then id (by the `rank` tool,
//!   `agents/tools/rank`, called through the host), and one sentence. A failed tool call fails the call.
//!
//! It runs whenever one of those keys grows and does nothing until the decision exists; then it writes the
//! summary and never again (its own write makes it run once more, for nothing). The content is built from
//! facts only, in a fixed order, so the same job always gives the same report.

use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, Serialize, View, log, serde_json, tools};
use std::fmt::Write;

const KEY: &str = "report";
const ID: &str = "summary";
/// Longest part of the goal quoted in the report, in characters.
const MAX_GOAL: usize = 1000;

/// The decision, as much of it as the report repeats; fields in alphabetical order.
#[derive(Deserialize, Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Decision {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<String>,
    basis: String,
    option: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runner_up: Option<String>,
    score: f64,
    stance: String,
    title: String,
}

#[derive(Deserialize, Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Landscape {
    competitors: u32,
    demand: f64,
    leader: Option<String>,
    pressure: f64,
    regulation: f64,
}

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Evaluation {
    score: f64,
    stance: String,
    title: String,
}

/// One line of the ranking; fields in alphabetical order.
#[derive(Deserialize, Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Ranked {
    option: String,
    score: f64,
    stance: String,
    title: String,
}

/// The summary; fields in alphabetical order.
#[derive(Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Report {
    decision: Decision,
    goal: String,
    landscape: Option<Landscape>,
    options: Vec<Ranked>,
    summary: String,
}

struct ReportAgent;

impl Agent for ReportAgent {
    fn info() -> AgentInfo {
        AgentInfo::new("report", "Writes one summary of the final decision, once it is made.")
            .reads(["decision/final", "evaluation/scores", "analysis/landscape", KEY])
            .writes([KEY])
            .tools(["rank"])
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        if ctx.get(KEY, ID).is_some() {
            return Ok(Effect::new());
        }
        let Some(decision) = ctx.get_json::<Decision>("decision/final", "strategy")? else {
            return Ok(Effect::new());
        };
        let landscape = ctx.get_json::<Landscape>("analysis/landscape", "market")?;
        let mut options = Vec::new();
        for fact in ctx.facts("evaluation/scores") {
            match fact.parse::<Evaluation>() {
                Ok(s) => options.push(Ranked { option: fact.id, score: s.score, stance: s.stance, title: s.title }),
                Err(why) => log::warn(format!("leaving out: {why}")),
            }
        }
        let report = report(&ctx.goal(), decision, landscape, rank(&options)?);
        Effect::new().fact_json(KEY, ID, &report)
    }
}

/// The options ranked by the `rank` tool.
fn rank(options: &[Ranked]) -> Result<Vec<Ranked>, String> {
    let input = serde_json::to_string(options).map_err(|e| e.to_string())?;
    let out = tools::invoke("rank", &input).map_err(|e| format!("the tool rank failed: {e:?}"))?;
    serde_json::from_str(&out).map_err(|e| format!("the tool rank returned what is not a ranking: {e}"))
}

/// The report over options already ranked.
fn report(goal: &str, decision: Decision, landscape: Option<Landscape>, options: Vec<Ranked>) -> Report {
    let d = &decision;
    let mut summary = format!("Pursue {} ({}, {} stance, score {})", d.option, d.title, d.stance, d.score);
    match (d.basis.as_str(), &d.question) {
        ("human", Some(q)) => _ = write!(summary, ", chosen by a human answering {q}"),
        ("evaluation", _) => summary.push_str(", ranked first by the evaluation"),
        (basis, _) => _ = write!(summary, ", decided on the basis of {basis}"),
    }
    if let Some(r) = options.iter().find(|r| Some(&r.option) == d.runner_up.as_ref()) {
        _ = write!(summary, " over {} (score {})", r.option, r.score);
    }
    summary.push('.');
    if let Some(m) = &landscape {
        _ = write!(summary, " Market: demand {}, competitor pressure {}", m.demand, m.pressure);
        if let Some(leader) = &m.leader {
            _ = write!(summary, " (led by {leader})");
        }
        _ = write!(summary, ", regulatory weight {}.", m.regulation);
    }
    let goal = goal.chars().take(MAX_GOAL).collect();
    Report { decision, goal, landscape, options, summary }
}

converge_sdk::export_agent!(ReportAgent);

#[cfg(test)]
mod tests {
    use super::*;
    use converge_sdk::serde_json;

    fn ranked(option: &str, score: f64, stance: &str) -> Ranked {
        Ranked { option: option.into(), score, stance: stance.into(), title: format!("{option} title") }
    }

    #[test]
    fn market_entry_example() {
        let decision = serde_json::from_str(
            r#"{"basis":"evaluation","option":"growth-direct","runner_up":"growth-partner","score":0.71,"stance":"growth","title":"Direct"}"#,
        )
        .unwrap();
        let landscape =
            serde_json::from_str(r#"{"competitors":2,"demand":0.8,"leader":"acme","pressure":0.25,"regulation":0.55}"#)
                .unwrap();
        let options = vec![
            ranked("growth-direct", 0.71, "growth"),
            ranked("growth-partner", 0.66, "growth"),
            ranked("defensive-wait", 0.58, "defensive"),
        ];
        let report = report("Enter the market?", decision, Some(landscape), options);
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.starts_with(r#"{"decision":{"basis":"evaluation","option":"growth-direct","#), "{json}");
        assert!(json.contains(r#""goal":"Enter the market?","landscape":{"competitors":2,"#), "{json}");
        assert!(json.contains(r#""options":[{"option":"growth-direct","score":0.71,"#), "{json}");
        assert_eq!(
            report.summary,
            "Pursue growth-direct (Direct, growth stance, score 0.71), ranked first by the evaluation over \
             growth-partner (score 0.66). Market: demand 0.8, competitor pressure 0.25 (led by acme), regulatory \
             weight 0.55."
        );
    }

    #[test]
    fn a_human_choice_without_a_landscape() {
        let decision = serde_json::from_str(
            r#"{"answer":"defensive-niche","basis":"human","option":"defensive-niche","question":"strategy-choice","runner_up":"growth-partner","score":0.58,"stance":"defensive","title":"Niche"}"#,
        )
        .unwrap();
        let options = vec![ranked("growth-partner", 0.59, "growth"), ranked("defensive-niche", 0.58, "defensive")];
        let report = report("g", decision, None, options);
        assert_eq!(
            report.summary,
            "Pursue defensive-niche (Niche, defensive stance, score 0.58), chosen by a human answering \
             strategy-choice over growth-partner (score 0.59)."
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains(r#""landscape":null,"options":[{"option":"growth-partner","#), "{json}");
    }
}
