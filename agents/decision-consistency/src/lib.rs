//! decision-consistency: a semantic invariant over the final decision, checked after every cycle.
//!
//! It holds when:
//! - there is at most one fact under `decision/final`;
//! - the decision is JSON with an `option` that has a score under `evaluation/scores` (governance decided
//!   among evaluated options, not something invented), with the stance that score gives it;
//! - a decision on the basis `human` names its `question`, and `answers/<question>` exists.
//!
//! It reads `decision/final`, `evaluation/scores` and `answers`, and writes nothing: an invariant only checks.
//! A violation ends the job with status `invariant_violated`.

use converge_sdk::{Deserialize, Invariant, InvariantClass, InvariantInfo, View};

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Decision {
    basis: String,
    option: String,
    stance: String,
    question: Option<String>,
}

#[derive(Deserialize)]
#[serde(crate = "converge_sdk::serde")]
struct Evaluation {
    stance: String,
}

struct DecisionConsistency;

impl Invariant for DecisionConsistency {
    fn info() -> InvariantInfo {
        InvariantInfo::new(
            "decision-consistency",
            "At most one final decision, and it names an evaluated strategy option.",
            InvariantClass::Semantic,
        )
    }

    fn check(ctx: &View) -> Result<(), String> {
        let decisions = ctx.facts("decision/final");
        if decisions.len() > 1 {
            let ids: Vec<&str> = decisions.iter().map(|f| f.id.as_str()).collect();
            return Err(format!("{} final decisions ({}), at most one is allowed", ids.len(), ids.join(", ")));
        }
        let Some(fact) = decisions.first() else {
            return Ok(());
        };
        let decision: Decision = fact.parse()?;
        let score = ctx.get_json::<Evaluation>("evaluation/scores", &decision.option)?;
        let answered = |q: &str| ctx.get("answers", q).is_some();
        consistent(&fact.id, &decision, score.as_ref(), answered)
    }
}

fn consistent(
    id: &str,
    d: &Decision,
    score: Option<&Evaluation>,
    answered: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let Some(score) = score else {
        return Err(format!("decision/final/{id} names {:?}, which has no evaluation/scores fact", d.option));
    };
    if score.stance != d.stance {
        return Err(format!(
            "decision/final/{id} gives {:?} the stance {:?}, its score says {:?}",
            d.option, d.stance, score.stance
        ));
    }
    if d.basis == "human" {
        match &d.question {
            Some(q) if answered(q) => {}
            Some(q) => return Err(format!("decision/final/{id} rests on question {q:?}, which has no answer")),
            None => return Err(format!("decision/final/{id} has basis human but names no question")),
        }
    }
    Ok(())
}

converge_sdk::export_invariant!(DecisionConsistency);

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(basis: &str, question: Option<&str>) -> Decision {
        Decision {
            basis: basis.into(),
            option: "o".into(),
            stance: "growth".into(),
            question: question.map(Into::into),
        }
    }

    #[test]
    fn holds_for_an_evaluated_option() {
        let score = Evaluation { stance: "growth".into() };
        assert_eq!(consistent("s", &decision("evaluation", None), Some(&score), |_| false), Ok(()));
        assert_eq!(consistent("s", &decision("human", Some("q")), Some(&score), |q| q == "q"), Ok(()));
    }

    #[test]
    fn violations_are_named() {
        let score = Evaluation { stance: "growth".into() };
        assert!(consistent("s", &decision("evaluation", None), None, |_| true).unwrap_err().contains("no evaluation"));
        let other = Evaluation { stance: "defensive".into() };
        assert!(consistent("s", &decision("evaluation", None), Some(&other), |_| true).unwrap_err().contains("stance"));
        assert!(
            consistent("s", &decision("human", Some("q")), Some(&score), |_| false).unwrap_err().contains("no answer")
        );
        assert!(consistent("s", &decision("human", None), Some(&score), |_| true).unwrap_err().contains("no question"));
    }
}
