//! governance: reconciles the two strategy camps into one final decision, and asks a human only when the camps
//! genuinely disagree.
//!
//! - **reads** `evaluation/scores` (every score), `answers` (the answer to its question, `answers/<question>`)
//!   and `decision/final` (to see whether it decided already).
//! - **writes** `decision/final`, id `strategy`, once:
//!   `{"answer"?, "basis", "option", "question"?, "runner_up"?, "score", "stance", "title"}`, where `basis` is
//!   `evaluation` or `human`. It may ask the question `strategy-choice` (and, if an answer names neither option,
//!   `strategy-choice-2`, then `strategy-choice-3`; after a third answer that names neither, it refuses with a
//!   message, which the engine records as a diagnostic, and decides nothing).
//!
//! The rule: rank the scored options by score, ties by id, and take the best option of each stance (camp). When
//! the best two camps' leaders are less than 0.05 apart, the views disagree and a human picks one of the two:
//! the answer may be an option id or a stance (`growth`, `defensive`). Otherwise the top option wins and nobody
//! is asked. Options of one camp close to each other are no disagreement: the higher one wins.
//!
//! Both camps propose in the same cycle, so their scores arrive together and governance decides on all of them.
//! The decision is written once: a later run finds it and adds nothing (its own write makes it run once more,
//! for nothing, because it reads `decision/final`). Re-asking an open question is a no-op, so running again while
//! waiting is harmless.

use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, Serialize, View, log, serde_json};
use std::collections::{BTreeMap, BTreeSet};

const DECISION_KEY: &str = "decision/final";
const DECISION_ID: &str = "strategy";
/// Camp leaders closer than this disagree.
const MARGIN: f64 = 0.05;
const QUESTION: &str = "strategy-choice";
/// How many times a human is asked before governance gives up.
const MAX_ASKS: u32 = 3;
/// Longest part of an answer quoted in the decision, in characters.
const MAX_QUOTE: usize = 200;

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Evaluation {
    score: f64,
    stance: String,
    title: String,
}

/// The final decision; fields in alphabetical order, so the JSON keys are sorted.
#[derive(Debug, Serialize)]
#[serde(crate = "converge_sdk::serde")]
struct Decision {
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<String>,
    basis: &'static str,
    option: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    question: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runner_up: Option<String>,
    score: f64,
    stance: String,
    title: String,
}

#[derive(Debug)]
enum Verdict {
    /// No scores yet.
    Wait,
    Decide(Decision),
    Ask {
        id: String,
        prompt: String,
    },
    /// Every answer named neither option.
    Stuck(String),
}

struct Governance;

impl Agent for Governance {
    fn info() -> AgentInfo {
        AgentInfo::new("governance", "Decides among the scored options; asks a human when the camps are too close.")
            .reads(["evaluation/scores", "answers", DECISION_KEY])
            .writes([DECISION_KEY])
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        if ctx.get(DECISION_KEY, DECISION_ID).is_some() {
            return Ok(Effect::new());
        }
        let mut scores = BTreeMap::new();
        for fact in ctx.facts("evaluation/scores") {
            match fact.parse::<Evaluation>() {
                Ok(score) => _ = scores.insert(fact.id, score),
                Err(why) => log::warn(format!("ignoring: {why}")),
            }
        }
        match govern(&scores, |question| ctx.get("answers", question).map(|f| f.content)) {
            Verdict::Wait => Ok(Effect::new()),
            Verdict::Decide(decision) => {
                log::info(format!("decided {} (basis: {})", decision.option, decision.basis));
                Effect::new().fact_json(DECISION_KEY, DECISION_ID, &decision)
            }
            Verdict::Ask { id, prompt } => Ok(Effect::new().ask(id, prompt)),
            Verdict::Stuck(why) => Err(why),
        }
    }
}

/// A scored option, by rank.
struct Ranked<'a> {
    id: &'a str,
    score: &'a Evaluation,
}

fn govern(scores: &BTreeMap<String, Evaluation>, answer: impl Fn(&str) -> Option<String>) -> Verdict {
    let mut ranked: Vec<Ranked> = scores.iter().map(|(id, score)| Ranked { id, score }).collect();
    ranked.sort_by(|a, b| b.score.score.total_cmp(&a.score.score).then_with(|| a.id.cmp(b.id)));
    let mut stances = BTreeSet::new();
    let leaders: Vec<&Ranked> = ranked.iter().filter(|r| stances.insert(r.score.stance.as_str())).collect();
    match (leaders.first(), leaders.get(1)) {
        (Some(a), Some(b)) if round2(a.score.score - b.score.score) < MARGIN => contest(a, b, answer),
        (Some(top), _) => Verdict::Decide(decision(top, ranked.get(1).map(|r| r.id), "evaluation", None)),
        (None, _) => Verdict::Wait,
    }
}

/// Two camps too close to call: the human's answer decides, or the question is asked (again).
fn contest(a: &Ranked, b: &Ranked, answer: impl Fn(&str) -> Option<String>) -> Verdict {
    for attempt in 1..=MAX_ASKS {
        let question = question_id(attempt);
        let Some(text) = answer(&question) else {
            return Verdict::Ask { prompt: prompt(a, b, attempt), id: question };
        };
        // An answer that names neither option leads to the next question.
        if let Some((chosen, other)) = interpret(&text, a, b) {
            let quote: String = text.trim().chars().take(MAX_QUOTE).collect();
            return Verdict::Decide(decision(chosen, Some(other.id), "human", Some((question, quote))));
        }
    }
    Verdict::Stuck(format!(
        "none of the {MAX_ASKS} answers to {QUESTION} named {} or {}; nothing is decided",
        a.id, b.id
    ))
}

fn question_id(attempt: u32) -> String {
    if attempt == 1 { QUESTION.to_owned() } else { format!("{QUESTION}-{attempt}") }
}

fn prompt(a: &Ranked, b: &Ranked, attempt: u32) -> String {
    let again = if attempt > 1 {
        format!("The answer to {} named neither option. ", question_id(attempt - 1))
    } else {
        String::new()
    };
    let describe = |r: &Ranked| format!("{} (\"{}\") scores {}", r.id, r.score.title, r.score.score);
    format!(
        "{again}The {} and {} views disagree: {} and {}, less than {MARGIN} apart. Which should we pursue? \
         Answer {} or {}.",
        a.score.stance,
        b.score.stance,
        describe(a),
        describe(b),
        a.id,
        b.id
    )
}

/// The option an answer names, and the other one: an option id or a stance, exactly or inside a sentence that
/// names only one of them. A JSON string answer is unquoted first.
fn interpret<'r, 'a>(text: &str, a: &'r Ranked<'a>, b: &'r Ranked<'a>) -> Option<(&'r Ranked<'a>, &'r Ranked<'a>)> {
    let text = serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned()).trim().to_lowercase();
    let pick = |na: &str, nb: &str| -> Option<bool> {
        let (na, nb) = (na.to_lowercase(), nb.to_lowercase());
        if text == na || text == nb {
            return Some(text == na);
        }
        match (text.contains(&na), text.contains(&nb)) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    };
    let first = pick(a.id, b.id).or_else(|| pick(&a.score.stance, &b.score.stance))?;
    Some(if first { (a, b) } else { (b, a) })
}

fn decision(
    chosen: &Ranked,
    runner_up: Option<&str>,
    basis: &'static str,
    asked: Option<(String, String)>,
) -> Decision {
    let (question, answer) = asked.unzip();
    Decision {
        answer,
        basis,
        option: chosen.id.to_owned(),
        question,
        runner_up: runner_up.map(str::to_owned),
        score: chosen.score.score,
        stance: chosen.score.stance.clone(),
        title: chosen.score.title.clone(),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

converge_sdk::export_agent!(Governance);

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(list: &[(&str, f64, &str)]) -> BTreeMap<String, Evaluation> {
        list.iter()
            .map(|&(id, score, stance)| {
                (id.to_owned(), Evaluation { score, stance: stance.into(), title: format!("{id} title") })
            })
            .collect()
    }

    fn decided(verdict: Verdict) -> String {
        match verdict {
            Verdict::Decide(d) => serde_json::to_string(&d).unwrap(),
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    fn market_entry() -> BTreeMap<String, Evaluation> {
        scores(&[
            ("defensive-wait", 0.58, "defensive"),
            ("growth-direct", 0.71, "growth"),
            ("growth-partner", 0.66, "growth"),
        ])
    }

    fn review() -> BTreeMap<String, Evaluation> {
        scores(&[
            ("defensive-niche", 0.58, "defensive"),
            ("growth-direct", 0.57, "growth"),
            ("growth-partner", 0.59, "growth"),
        ])
    }

    #[test]
    fn clear_lead_is_decided_without_asking() {
        let d = decided(govern(&market_entry(), |_| None));
        assert_eq!(
            d,
            r#"{"basis":"evaluation","option":"growth-direct","runner_up":"growth-partner","score":0.71,"stance":"growth","title":"growth-direct title"}"#
        );
    }

    #[test]
    fn close_camps_ask_once_then_follow_the_answer() {
        match govern(&review(), |_| None) {
            Verdict::Ask { id, prompt } => {
                assert_eq!(id, "strategy-choice");
                assert_eq!(
                    prompt,
                    "The growth and defensive views disagree: growth-partner (\"growth-partner title\") scores 0.59 and \
                     defensive-niche (\"defensive-niche title\") scores 0.58, less than 0.05 apart. Which should we \
                     pursue? Answer growth-partner or defensive-niche."
                );
            }
            other => panic!("expected a question, got {other:?}"),
        }
        let answered = |q: &str| (q == "strategy-choice").then(|| "Defensive-Niche".to_owned());
        assert_eq!(
            decided(govern(&review(), answered)),
            r#"{"answer":"Defensive-Niche","basis":"human","option":"defensive-niche","question":"strategy-choice","runner_up":"growth-partner","score":0.58,"stance":"defensive","title":"defensive-niche title"}"#
        );
    }

    #[test]
    fn answers_may_name_a_stance_or_be_json() {
        let by_stance = decided(govern(&review(), |_| Some("let's go for growth".into())));
        assert!(by_stance.contains(r#""option":"growth-partner""#), "{by_stance}");
        let quoted = decided(govern(&review(), |_| Some(r#""defensive""#.into())));
        assert!(quoted.contains(r#""option":"defensive-niche""#), "{quoted}");
    }

    #[test]
    fn unclear_answers_are_asked_again_then_refused() {
        let first_unclear = |q: &str| (q == "strategy-choice").then(|| "both?".to_owned());
        match govern(&review(), first_unclear) {
            Verdict::Ask { id, prompt } => {
                assert_eq!(id, "strategy-choice-2");
                assert!(prompt.starts_with("The answer to strategy-choice named neither option. "), "{prompt}");
            }
            other => panic!("expected a second question, got {other:?}"),
        }
        assert!(matches!(govern(&review(), |_| Some("growth or defensive".into())), Verdict::Stuck(_)));
    }

    #[test]
    fn one_camp_or_nothing() {
        let one_camp = scores(&[("a", 0.6, "growth"), ("b", 0.6, "growth")]);
        assert!(decided(govern(&one_camp, |_| None)).contains(r#""option":"a","runner_up":"b""#));
        assert!(matches!(govern(&BTreeMap::new(), |_| None), Verdict::Wait));
    }

    #[test]
    fn a_margin_of_exactly_five_hundredths_is_no_disagreement() {
        let apart = scores(&[("g", 0.7, "growth"), ("d", 0.65, "defensive")]);
        assert!(decided(govern(&apart, |_| None)).contains(r#""option":"g""#));
    }
}
