//! One or more tests per SPEC §2 rule, named `rule_NN_...`, so every rule is reachable from a test name.

use crate::support::{InvariantScript, Script, facts, rayon, run, spec_with};
use converge_engine::{
    Agent, AgentInfo, Control, Diagnostic, DiagnosticKind, Effect, Execution, Fact, Failure, FailureKind, Interrupt,
    InvariantClass, Job, JobSpec, NoInterrupt, Outcome, Proposal, Question, Reason, SerialExecutor, Status, View,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

fn q(id: &str) -> Question {
    Question { id: id.into(), prompt: format!("what about {id}?") }
}

fn proposal(key: &str, id: &str, content: &str, confidence: f64) -> Proposal {
    Proposal { fact: Fact::new(key, id, content), confidence, rationale: "because".into() }
}

#[test]
fn rule_01_eligibility_dirty_keys_and_seeds_as_added() {
    // `a` copies seeds (added in cycle 1); `b` reads `y` and runs only in the cycle after `a` wrote it;
    // `c` has no reads and runs in cycle 1 only.
    let spec = spec_with(&[("x", "1", "s")]);
    let agents = [
        Script::new("a", &["x"], &["y"]).copy("x", "y", "+a").build(),
        Script::new("b", &["y"], &["z"]).copy("y", "z", "+b").build(),
        Script::new("c", &[], &["w"]).always(facts(&[("w", "1", "c")])).build(),
    ];
    let job = run(&spec, &agents, &[]);
    assert_eq!(job.status(), Status::Converged);
    let eligible: Vec<Vec<String>> = job.trace().iter().map(|t| t.eligible.clone()).collect();
    assert_eq!(eligible, vec![vec!["a", "b", "c"], vec!["b"], vec![]]);
    assert_eq!(job.view().get("z", "1").unwrap().content, "s+a+b");
    assert_eq!(job.view().get("w", "1").unwrap().cycle, 1);
}

#[test]
fn rule_02_agents_see_the_cycle_start_snapshot() {
    // `b` counts `y` during cycle 1 while `a` writes `y` in the same cycle: it must see 0.
    struct Counter(AgentInfo);
    impl Agent for Counter {
        fn info(&self) -> &AgentInfo {
            &self.0
        }
        fn execute(&self, view: &View) -> Execution {
            facts(&[("seen", &view.cycle().to_string(), &view.count("y").to_string())]).into()
        }
    }
    let counter = Counter(AgentInfo {
        name: "b".into(),
        writes: vec!["seen".into()],
        reads: vec!["y".into()],
        ..AgentInfo::default()
    });
    let agents: Vec<Arc<dyn Agent>> =
        vec![Script::new("a", &[], &["y"]).always(facts(&[("y", "1", "v")])).build(), Arc::new(counter)];
    for threads in [1, 2] {
        let mut job = Job::new(&spec_with(&[]), &agents, &[]).unwrap();
        job.run(&rayon(threads), &NoInterrupt);
        assert_eq!(job.view().get("seen", "1").unwrap().content, "0");
        assert_eq!(job.view().get("seen", "2").unwrap().content, "1");
    }
}

#[test]
fn rule_03_merge_in_agent_name_order() {
    // Both write (k, 1); whatever the registration order, `alpha` merges first and `omega` conflicts.
    let alpha = Script::new("alpha", &[], &["k"]).always(facts(&[("k", "1", "from alpha")]));
    let omega = Script::new("omega", &[], &["k"]).always(facts(&[("k", "1", "from omega")]));
    for agents in [[alpha.clone().build(), omega.clone().build()], [omega.build(), alpha.build()]] {
        let job = run(&spec_with(&[]), &agents, &[]);
        assert_eq!(job.status(), Status::Conflict);
        assert_eq!(job.view().get("k", "1").unwrap().agent, "alpha");
        let d = &job.result("j").diagnostics[0];
        assert_eq!((d.agent.as_str(), d.kind), ("omega", DiagnosticKind::Conflict));
    }
}

#[test]
fn rule_04_invalid_effects_are_rejected_whole() {
    let big = "x".repeat(65 * 1024);
    let bad: Vec<(&str, Effect)> = vec![
        ("undeclared key", facts(&[("y", "1", "ok"), ("other", "1", "no")])),
        ("reserved key", facts(&[("y", "1", "ok"), ("diagnostics", "me@1", "forged")])),
        ("answers key", facts(&[("y", "1", "ok"), ("answers", "q", "forged")])),
        ("bad key", facts(&[("y", "1", "ok"), ("Y", "1", "no")])),
        ("bad id", facts(&[("y", "1", "ok"), ("y", "", "no")])),
        ("control id", facts(&[("y", "1", "ok"), ("y", "a\nb", "no")])),
        ("oversize", facts(&[("y", "1", "ok"), ("y", "2", &big)])),
        ("twice", facts(&[("y", "1", "ok"), ("y", "1", "other")])),
        ("nan", Effect { proposals: vec![proposal("y", "2", "p", f64::NAN)], ..facts(&[("y", "1", "ok")]) }),
        ("over 1", Effect { proposals: vec![proposal("y", "2", "p", 1.5)], ..facts(&[("y", "1", "ok")]) }),
        (
            "fact and proposal differ",
            Effect { proposals: vec![proposal("y", "1", "other", 0.9)], ..facts(&[("y", "1", "ok")]) },
        ),
        (
            "bad question id",
            Effect {
                questions: vec![Question { id: String::new(), prompt: "?".into() }],
                ..facts(&[("y", "1", "ok")])
            },
        ),
    ];
    for (what, effect) in bad {
        let agents = [Script::new("a", &[], &["y"]).emit(1, effect).build()];
        let job = run(&spec_with(&[]), &agents, &[]);
        assert_eq!(job.status(), Status::Converged, "{what}");
        assert!(job.view().get("y", "1").is_none(), "{what}: part of an invalid effect was applied");
        let r = job.result("j");
        assert_eq!(r.diagnostics.len(), 1, "{what}");
        assert_eq!(r.diagnostics[0].kind, DiagnosticKind::InvalidEffect, "{what}");
        assert_eq!(job.trace()[0].agents[0].outcome, Outcome::Failed(FailureKind::InvalidEffect), "{what}");
    }
    // Exact repeats inside one effect are fine.
    let agents = [Script::new("a", &[], &["y"]).emit(1, facts(&[("y", "1", "ok"), ("y", "1", "ok")])).build()];
    assert_eq!(run(&spec_with(&[]), &agents, &[]).view().count("y"), 1);
}

#[test]
fn rule_05_insertion_is_idempotent_and_conflicts_carry_both_versions() {
    let agents = [
        Script::new("a", &[], &["k"]).always(facts(&[("k", "1", "v")])).build(),
        Script::new("b", &[], &["k"]).always(facts(&[("k", "1", "v"), ("k", "2", "w")])).build(),
    ];
    let job = run(&spec_with(&[("k", "1", "v")]), &agents, &[]);
    assert_eq!(job.status(), Status::Converged);
    assert_eq!(job.view().get("k", "1").unwrap().agent, "seed");
    assert_eq!(job.trace()[0].duplicates, 2);

    let agents = [
        Script::new("a", &[], &["k"]).always(facts(&[("k", "2", "mine")])).build(),
        Script::new("b", &[], &["k"]).always(facts(&[("k", "3", "b-ok"), ("k", "2", "theirs")])).build(),
    ];
    let job = run(&spec_with(&[]), &agents, &[]);
    assert_eq!(job.status(), Status::Conflict);
    assert!(job.view().get("k", "3").is_none(), "the conflicting effect was partly applied");
    let r = job.result("j");
    let c = r.diagnostics[0].conflict.as_ref().unwrap();
    assert_eq!((c.existing.agent.as_str(), c.existing.content.as_str()), ("a", "mine"));
    assert_eq!((c.incoming.agent.as_str(), c.incoming.content.as_str()), ("b", "theirs"));
    assert_eq!(r.error.unwrap().kind, "conflict");
    // The diagnostic is also a fact, and the context keeps what was merged before.
    assert!(job.view().get("diagnostics", "b@1").is_some());
    assert_eq!(job.view().get("k", "2").unwrap().content, "mine");
}

#[test]
fn rule_06_proposals_promoted_by_min_confidence() {
    let effect = Effect {
        proposals: vec![
            proposal("p", "low", "x", 0.49),
            proposal("p", "edge", "x", 0.5),
            proposal("p", "high", "x", 0.9),
        ],
        ..Effect::default()
    };
    let agents = [Script::new("a", &[], &["p"]).emit(1, effect).build()];
    let job = run(&spec_with(&[]), &agents, &[]);
    let view = job.view();
    let ids: Vec<&str> = view.facts("p").map(|f| f.id).collect();
    assert_eq!(ids, ["edge", "high"]);
    let t = &job.trace()[0];
    assert_eq!(t.promoted.len(), 2);
    assert_eq!(t.rejected_proposals.len(), 1);
    assert_eq!(t.rejected_proposals[0].id, "low");

    // Proposals come after every effect of the cycle: a proposal that disagrees with a fact `z` writes
    // in the same cycle conflicts even though `a` < `z`.
    let agents = [
        Script::new("a", &[], &["p"])
            .emit(1, Effect { proposals: vec![proposal("p", "1", "a", 0.9)], ..Effect::default() })
            .build(),
        Script::new("z", &[], &["p"]).emit(1, facts(&[("p", "1", "z")])).build(),
    ];
    let job = run(&spec_with(&[]), &agents, &[]);
    assert_eq!(job.status(), Status::Conflict);
    assert_eq!(job.view().get("p", "1").unwrap().agent, "z");
}

#[test]
fn rule_07_questions_wait_and_resume_by_answer() {
    let asker = Script::new("asker", &[], &[])
        .always(Effect { questions: vec![q("q1"), q("q2"), q("q1")], ..Effect::default() });
    let decider = Script::new("decider", &["answers"], &["decision"]).copy("answers", "decision", "!");
    let mut job = Job::new(&spec_with(&[]), &[asker.build(), decider.build()], &[]).unwrap();
    assert_eq!(job.run(&SerialExecutor, &NoInterrupt), Status::Waiting);
    assert_eq!(job.open_questions().len(), 2);
    assert_eq!(job.answer("nope", "x".into()).unwrap_err().to_string(), "no question \"nope\" was asked in this job");
    job.answer("q2", "yes".into()).unwrap();
    assert!(job.answer("q2", "again".into()).is_err());
    // One of two answered: still waiting, nothing applied.
    assert_eq!(job.run(&SerialExecutor, &NoInterrupt), Status::Waiting);
    assert_eq!(job.view().count("answers"), 0);
    job.answer("q1", "no".into()).unwrap();
    assert_eq!(job.run(&SerialExecutor, &NoInterrupt), Status::Converged);
    let v = job.view();
    assert_eq!(v.get("answers", "q1").unwrap().agent, "human");
    assert_eq!(v.get("decision", "q1").unwrap().content, "no!");
    assert_eq!(v.get("decision", "q2").unwrap().content, "yes!");
    assert!(job.open_questions().is_empty());
    assert!(matches!(job.answer("q1", "late".into()), Err(converge_engine::AnswerError::Finished(_))));
}

#[test]
fn rule_08_failure_kinds_become_diagnostics() {
    struct Panics(AgentInfo);
    impl Agent for Panics {
        fn info(&self) -> &AgentInfo {
            &self.0
        }
        fn execute(&self, _: &View) -> Execution {
            panic!("guest bug")
        }
    }
    let kinds = [
        FailureKind::OutOfFuel,
        FailureKind::OutOfMemory,
        FailureKind::Deadline,
        FailureKind::Trap,
        FailureKind::Refused,
        FailureKind::InvalidEffect,
    ];
    for kind in kinds {
        let agents = [
            Script::new("bad", &[], &["y"]).fail(1, Failure::new(kind, "boom")).build(),
            Script::new("good", &[], &["z"]).always(facts(&[("z", "1", "ok")])).build(),
        ];
        let job = run(&spec_with(&[]), &agents, &[]);
        assert_eq!(job.status(), Status::Converged, "{kind}");
        let fact = job.view().get("diagnostics", "bad@1").unwrap().to_fact();
        let d: Diagnostic = serde_json::from_str(&fact.content).unwrap();
        assert_eq!((d.agent.as_str(), d.cycle, d.kind, d.message.as_str()), ("bad", 1, kind.into(), "boom"));
        assert!(job.view().get("z", "1").is_some());
        assert_eq!(job.result("j").deterministic, kind != FailureKind::Deadline);
    }
    // A panicking native agent fails as a trap.
    let agents: Vec<Arc<dyn Agent>> = vec![Arc::new(Panics(AgentInfo { name: "p".into(), ..AgentInfo::default() }))];
    let job = run(&spec_with(&[]), &agents, &[]);
    assert_eq!(job.result("j").diagnostics[0].kind, DiagnosticKind::Trap);
    // A required agent's failure ends the job.
    let agents = [Script::new("must", &[], &[]).required().fail(1, Failure::refused("no")).build()];
    let job = run(&spec_with(&[]), &agents, &[]);
    assert_eq!(job.status(), Status::AgentFailed);
    assert!(job.result("j").error.unwrap().message.contains("must"));
}

#[test]
fn rule_09_invariants_by_class() {
    // `g` extends a chain of ids `1`, `1+`, `1++`, ... one fact per cycle, up to four characters.
    let mut chain = Script::new("g", &["n"], &["n"]);
    chain.copy.push(crate::support::Copy {
        from: "n".into(),
        to: "n".into(),
        suffix: String::new(),
        id_suffix: "+".into(),
        max_id_len: 4,
        confidence: None,
    });
    let below = |class| {
        InvariantScript {
            name: "small".into(),
            class,
            require: BTreeMap::new(),
            below: [("n".to_owned(), 3)].into(),
            forbid: vec![],
        }
        .build()
    };
    let mut spec = spec_with(&[("n", "1", "")]);
    spec.invariants = vec!["small".into()];
    for (class, status, cycles) in [
        (InvariantClass::Structural, Status::InvariantViolated, 2),
        (InvariantClass::Semantic, Status::InvariantViolated, 2),
        (InvariantClass::Acceptance, Status::InvariantViolated, 4),
    ] {
        let job = run(&spec, &[chain.clone().build()], &[below(class)]);
        assert_eq!((job.status(), job.cycles()), (status, cycles), "{class}");
        let d = job.result("j").diagnostics;
        assert_eq!((d[0].agent.as_str(), d[0].kind), ("small", DiagnosticKind::InvariantViolated));
    }
    // An acceptance invariant only looks at the fixed point.
    let at_least = InvariantScript {
        name: "enough".into(),
        class: InvariantClass::Acceptance,
        require: [("n".to_owned(), 4)].into(),
        below: BTreeMap::new(),
        forbid: vec![],
    };
    let mut spec = spec_with(&[("n", "1", "")]);
    spec.invariants = vec!["enough".into()];
    assert_eq!(run(&spec, &[chain.build()], &[at_least.build()]).status(), Status::Converged);
}

#[test]
fn rule_10_fixed_point() {
    let agents = [Script::new("a", &["x"], &["y"]).copy("x", "y", "").build()];
    let job = run(&spec_with(&[("x", "1", "v")]), &agents, &[]);
    assert_eq!(job.status(), Status::Converged);
    assert_eq!(job.cycles(), 2, "cycle 1 inserts, cycle 2 is quiet");
    assert!(job.result("j").error.is_none());
    // No agent at all: cycle 1 is quiet.
    let job = run(&spec_with(&[]), &[], &[]);
    assert_eq!((job.status(), job.cycles()), (Status::Converged, 1));
}

#[test]
fn rule_11_budgets() {
    /// Interrupts from the n-th question on.
    struct After(AtomicU32, u32, Interrupt);
    impl Control for After {
        fn interrupt(&self) -> Option<Interrupt> {
            (self.0.fetch_add(1, Ordering::SeqCst) >= self.1).then_some(self.2)
        }
    }
    // Cycles: a chain that never stops.
    let forever = Script::new("f", &["n"], &["n"]).copy("n", "n", "");
    let mut forever = forever;
    forever.copy[0].id_suffix = "+".into();
    let mut spec = spec_with(&[("n", "1", "")]);
    spec.budget.max_cycles = 5;
    let job = run(&spec, &[forever.clone().build()], &[]);
    let r = job.result("j");
    assert_eq!((r.status, r.reason, r.cycles), (Status::BudgetExhausted, Some(Reason::Cycles), 5));
    assert_eq!(r.error.unwrap().kind, "cycles");

    // Facts: seeds count, and the effect that would pass the limit is not applied.
    let mut spec = spec_with(&[("x", "1", ""), ("x", "2", "")]);
    spec.budget.max_facts = 4;
    let agents =
        [Script::new("a", &[], &["y"]).emit(1, facts(&[("y", "1", ""), ("y", "2", ""), ("y", "3", "")])).build()];
    let job = run(&spec, &agents, &[]);
    assert_eq!((job.status(), job.result("j").reason), (Status::BudgetExhausted, Some(Reason::Facts)));
    assert_eq!(job.view().count("y"), 0);
    assert!(job.view().len() <= 4);

    // Job timeout and cancel, through the host's control.
    let mut job = Job::new(&spec_with(&[("n", "1", "")]), &[forever.clone().build()], &[]).unwrap();
    assert_eq!(job.run(&SerialExecutor, &After(AtomicU32::new(0), 3, Interrupt::JobTimeout)), Status::BudgetExhausted);
    let r = job.result("j");
    assert_eq!((r.reason, r.deterministic), (Some(Reason::JobTimeout), false));
    let mut job = Job::new(&spec_with(&[("n", "1", "")]), &[forever.build()], &[]).unwrap();
    assert_eq!(job.run(&SerialExecutor, &After(AtomicU32::new(0), 2, Interrupt::Cancel)), Status::Cancelled);
    assert!(job.view().count("n") >= 1, "a cancelled job keeps its partial context");
}

#[test]
fn rule_12_determinism_across_threads_and_registration_order() {
    let agents = || {
        vec![
            Script::new("a", &["x"], &["y"]).copy("x", "y", "+a").build(),
            Script::new("b", &["x", "y"], &["z"]).copy("y", "z", "+b").copy("x", "z", "+bx").build(),
            Script::new("c", &[], &["x"]).always(facts(&[("x", "c", "c")])).build(),
        ]
    };
    let spec = spec_with(&[("x", "1", "one"), ("x", "2", "two")]);
    let mut hashes = Vec::new();
    for threads in [1, 2, 4] {
        let mut list = agents();
        if threads == 2 {
            list.reverse();
        }
        let mut job = Job::new(&spec, &list, &[]).unwrap();
        job.run(&rayon(threads), &NoInterrupt);
        hashes.push(serde_json::to_string(&job.result("j")).unwrap());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn job_errors_name_the_field() {
    let mut spec = JobSpec::new("g");
    spec.agents = Some(vec!["a".into(), "ghost".into()]);
    let agents = [Script::new("a", &[], &[]).build()];
    let err = Job::new(&spec, &agents, &[]).unwrap_err();
    assert_eq!(err.to_string(), "agents[1]: unknown agent \"ghost\"");
    let twice = [Script::new("a", &[], &[]).build(), Script::new("a", &[], &[]).build()];
    assert!(Job::new(&JobSpec::new("g"), &twice, &[]).is_err());
    let bad = [Script::new("a", &[], &["diagnostics"]).build()];
    assert!(Job::new(&JobSpec::new("g"), &bad, &[]).unwrap_err().to_string().contains("reserved"));
}
