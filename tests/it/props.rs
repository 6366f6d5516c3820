//! proptest properties of the engine. Each test names the SPEC §2 rule it guards.
//!
//! Agent systems are generated as data ([`Script`]s over a small alphabet of keys), so failures shrink to a
//! readable system.

use crate::support::{Copy, InvariantScript, Log, Script, ScriptAgent, facts, rayon, run, spec_with};
use converge_engine::{
    Agent, DiagnosticKind, Effect, Fact, Failure, FailureKind, InvariantClass, Job, JobSpec, NoInterrupt, Outcome,
    Proposal, Question, SerialExecutor, Status,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(&KEYS[..]).prop_map(str::to_owned)
}

fn keys() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(&KEYS[..], 0..=3).prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

fn failure_kind() -> impl Strategy<Value = FailureKind> {
    proptest::sample::select(vec![
        FailureKind::OutOfFuel,
        FailureKind::OutOfMemory,
        FailureKind::Trap,
        FailureKind::Refused,
        FailureKind::InvalidEffect,
    ])
}

/// One generated agent: copies between keys with bounded id growth, sometimes as proposals, sometimes
/// failing in one cycle, sometimes emitting fixed facts.
fn script(index: usize) -> impl Strategy<Value = Script> {
    (
        keys(),
        proptest::collection::vec((key(), key(), 0..3usize, prop::option::of(0.0..=1.0f64)), 0..3),
        prop::option::of((1..4u32, failure_kind())),
        proptest::collection::vec((key(), 0..3u8, 0..2u8), 0..3),
    )
        .prop_map(move |(reads, copies, fail, fixed)| {
            let name = format!("agent-{index}");
            let mut writes = BTreeSet::new();
            let mut s = Script::new(&name, &[], &[]);
            s.reads = reads;
            for (from, to, grow, confidence) in copies {
                writes.insert(to.clone());
                s.copy.push(Copy {
                    from,
                    to,
                    suffix: format!("<{index}"),
                    id_suffix: "+".repeat(grow),
                    max_id_len: 5,
                    confidence,
                });
            }
            if let Some((cycle, kind)) = fail {
                s.fail.insert(cycle, Failure::new(kind, format!("generated failure of {name}")));
            }
            if !fixed.is_empty() {
                let mut effect = Effect::default();
                for (k, id, content) in fixed {
                    writes.insert(k.clone());
                    effect.facts.push(Fact::new(k, format!("f{id}"), format!("v{content}")));
                }
                s.emit.insert(1, effect);
            }
            s.writes = writes.into_iter().collect();
            s
        })
}

fn system() -> impl Strategy<Value = Vec<Script>> {
    (1..6usize).prop_flat_map(|n| (0..n).map(script).collect::<Vec<_>>())
}

fn seeds() -> impl Strategy<Value = Vec<Fact>> {
    proptest::collection::btree_map((key(), 0..4u8), 0..3u8, 0..5)
        .prop_map(|m| m.into_iter().map(|((k, i), c)| Fact::new(k, format!("s{i}"), format!("seed{c}"))).collect())
}

fn spec(seeds: Vec<Fact>, max_cycles: u32, max_facts: u64) -> JobSpec {
    let mut spec = JobSpec::new("property");
    spec.facts = seeds;
    spec.budget.max_cycles = max_cycles;
    spec.budget.max_facts = max_facts.max(spec.facts.len() as u64);
    spec
}

fn build(scripts: &[Script]) -> Vec<Arc<dyn Agent>> {
    scripts.iter().cloned().map(Script::build).collect()
}

fn snapshot(job: &Job) -> BTreeMap<(String, String), (String, String, u32)> {
    job.view()
        .iter()
        .map(|f| ((f.key.to_owned(), f.id.to_owned()), (f.content.to_owned(), f.agent.to_owned(), f.cycle)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Rule 12: the same job gives the same result under shuffled registration and 1, 2 or 3 threads.
    #[test]
    fn determinism(scripts in system(), seeds in seeds(), order in any::<u64>(), cycles in 1..8u32) {
        let spec = spec(seeds, cycles, 10_000);
        let reference = {
            let mut job = Job::new(&spec, &build(&scripts), &[]).unwrap();
            job.run(&SerialExecutor, &NoInterrupt);
            serde_json::to_string(&(job.result("j"), job.trace())).unwrap()
        };
        for threads in [1, 2, 3] {
            let mut agents = build(&scripts);
            let len = agents.len();
            #[allow(clippy::cast_possible_truncation)]
            agents.rotate_left((order as usize + threads) % len);
            if order % 2 == 0 { agents.reverse(); }
            let mut job = Job::new(&spec, &agents, &[]).unwrap();
            job.run(&rayon(threads), &NoInterrupt);
            prop_assert_eq!(&serde_json::to_string(&(job.result("j"), job.trace())).unwrap(), &reference);
        }
    }

    /// Rule 5 (and §1): no fact ever changes or disappears, cycle after cycle.
    #[test]
    fn monotonicity(scripts in system(), seeds in seeds()) {
        let mut job = Job::new(&spec(seeds, 8, 10_000), &build(&scripts), &[]).unwrap();
        let mut before = snapshot(&job);
        while job.step(&SerialExecutor, &NoInterrupt).is_some() {
            let after = snapshot(&job);
            for (identity, version) in &before {
                prop_assert_eq!(after.get(identity), Some(version));
            }
            before = after;
        }
    }

    /// Rules 4-5: every fact of an applied effect is in the result, with that content.
    #[test]
    fn preservation(scripts in system(), seeds in seeds()) {
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let agents: Vec<Arc<dyn Agent>> = scripts.iter().cloned().map(|s| ScriptAgent::logged(s, &log)).collect();
        let mut job = Job::new(&spec(seeds, 8, 10_000), &agents, &[]).unwrap();
        job.run(&SerialExecutor, &NoInterrupt);
        let view = job.view();
        let applied: BTreeSet<(u32, String)> = job.trace().iter()
            .flat_map(|t| t.agents.iter().filter(|a| a.outcome == Outcome::Applied).map(move |a| (t.cycle, a.agent.clone())))
            .collect();
        for (cycle, agent, result) in log.lock().unwrap().iter() {
            if let (true, Ok(effect)) = (applied.contains(&(*cycle, agent.clone())), result) {
                for f in &effect.facts {
                    prop_assert_eq!(view.get(&f.key, &f.id).map(|g| g.content), Some(f.content.as_str()));
                }
            }
        }
    }

    /// Rule 5: two agents emitting different versions of one fact end the job in `conflict`, naming both.
    #[test]
    fn conflict_detection(
        k in key(), id in "[a-z0-9]{1,8}", left in "[a-z]{0,6}", right in "[a-z]{0,6}",
        first in "[a-m][a-z]{0,5}", second in "[n-z][a-z]{0,5}", others in system(),
    ) {
        prop_assume!(left != right);
        let mut agents = build(&others.iter().map(|s| {
            let mut s = s.clone();
            s.copy.clear(); s.emit.clear(); s.fail.clear(); // noise that runs but writes nothing
            s
        }).collect::<Vec<_>>());
        agents.push(Script::new(&first, &[], &[&k]).always(facts(&[(&k, &id, &left)])).build());
        agents.push(Script::new(&second, &[], &[&k]).always(facts(&[(&k, &id, &right)])).build());
        let job = run(&JobSpec::new("conflict"), &agents, &[]);
        prop_assert_eq!(job.status(), Status::Conflict);
        let r = job.result("j");
        let d = r.diagnostics.iter().find(|d| d.kind == DiagnosticKind::Conflict).unwrap();
        let c = d.conflict.as_ref().unwrap();
        prop_assert_eq!((&c.existing.agent, &c.existing.content), (&first, &left));
        prop_assert_eq!((&c.incoming.agent, &c.incoming.content), (&second, &right));
    }

    /// Rule 11: a job always ends within `max_cycles`, and the context never holds more than `max_facts`.
    #[test]
    fn termination(scripts in system(), seeds in seeds(), max_cycles in 1..10u32, max_facts in 1..40u64) {
        let spec = spec(seeds, max_cycles, max_facts);
        let limit = spec.budget.max_facts;
        let mut job = Job::new(&spec, &build(&scripts), &[]).unwrap();
        while job.step(&SerialExecutor, &NoInterrupt).is_some() {
            prop_assert!(job.view().len() as u64 <= limit);
        }
        prop_assert!(job.cycles() <= max_cycles);
        prop_assert!(job.view().len() as u64 <= limit);
        prop_assert!(job.status().is_terminal() || job.status() == Status::Waiting);
        if job.status() == Status::BudgetExhausted {
            prop_assert!(job.result("j").reason.is_some());
        }
    }

    /// Rule 4: an effect with one bad part leaves nothing but its diagnostic.
    #[test]
    fn effect_atomicity(good in proptest::collection::btree_set("[a-z]{1,4}", 1..20), which in 0..4usize) {
        let mut effect = Effect { facts: good.iter().map(|i| Fact::new("out", i, "ok")).collect(), ..Effect::default() };
        match which {
            0 => effect.facts.push(Fact::new("undeclared", "x", "")),
            1 => effect.facts.push(Fact::new("out", "bad\u{7}", "")),
            2 => effect.proposals.push(Proposal { fact: Fact::new("out", "p", ""), confidence: -0.1, rationale: String::new() }),
            _ => effect.facts.push(Fact::new("out", "big", "x".repeat(65 * 1024 + 1))),
        }
        let job = run(&JobSpec::new("atomic"), &[Script::new("a", &[], &["out"]).emit(1, effect).build()], &[]);
        prop_assert_eq!(job.view().count("out"), 0);
        let keys: Vec<String> = job.view().keys().map(str::to_owned).collect();
        prop_assert_eq!(keys, vec!["diagnostics"]);
        prop_assert_eq!(job.result("j").diagnostics[0].kind, DiagnosticKind::InvalidEffect);
    }

    /// Rule 1: an agent runs in cycle n > 1 iff one of its reads got a new fact in cycle n - 1.
    #[test]
    fn eligibility(scripts in system(), seeds in seeds()) {
        let job = run(&spec(seeds, 8, 10_000), &build(&scripts), &[]);
        let view = job.view();
        let mut inserted: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
        for f in view.iter() {
            inserted.entry(f.cycle).or_default().insert(f.key);
        }
        for t in job.trace().iter().skip(1) {
            let dirty = inserted.get(&(t.cycle - 1)).cloned().unwrap_or_default();
            for s in &scripts {
                let should = s.reads.iter().any(|k| dirty.contains(k.as_str()));
                prop_assert_eq!(t.eligible.contains(&s.name), should, "cycle {} agent {}", t.cycle, s.name);
            }
        }
    }

    /// Rule 5: re-emitting facts is a no-op; the context is as if they were emitted once.
    #[test]
    fn idempotence(ids in proptest::collection::btree_set("[a-z]{1,3}", 1..10), rounds in 1..5usize) {
        // `pump` adds one fact to `tick` per cycle for `rounds` cycles; `echo` re-emits the same set each time.
        let mut pump = Script::new("pump", &["tick"], &["tick"]);
        pump.copy.push(Copy { from: "tick".into(), to: "tick".into(), suffix: String::new(), id_suffix: "+".into(), max_id_len: rounds, confidence: None });
        let same = facts(&ids.iter().map(|i| ("out", i.as_str(), "same")).collect::<Vec<_>>());
        let doubled = Effect { facts: [same.facts.clone(), same.facts.clone()].concat(), ..Effect::default() };
        let echo = Script::new("echo", &["tick"], &["out"]).always(doubled);
        let job = run(&spec_with(&[("tick", "+", "")]), &[pump.build(), echo.build()], &[]);
        prop_assert_eq!(job.status(), Status::Converged);
        prop_assert_eq!(job.view().count("out"), ids.len());
        prop_assert!(job.view().facts("out").all(|f| f.cycle == 1));
    }

    /// Rule 6: a proposal enters the context iff its confidence reaches `min_confidence`.
    #[test]
    fn proposal_threshold(confidences in proptest::collection::vec(0.0..=1.0f64, 1..20), min in 0.0..=1.0f64) {
        let proposals = confidences.iter().enumerate()
            .map(|(i, c)| Proposal { fact: Fact::new("p", i.to_string(), "x"), confidence: *c, rationale: String::new() })
            .collect();
        let mut spec = JobSpec::new("proposals");
        spec.min_confidence = min;
        let job = run(&spec, &[Script::new("a", &[], &["p"]).emit(1, Effect { proposals, ..Effect::default() }).build()], &[]);
        for (i, c) in confidences.iter().enumerate() {
            prop_assert_eq!(job.view().get("p", &i.to_string()).is_some(), *c >= min);
        }
        let t = &job.trace()[0];
        prop_assert_eq!(t.promoted.len() + t.rejected_proposals.len(), confidences.len());
    }

    /// Rule 7: answering open questions in any order, at any moment, gives the same final context.
    #[test]
    fn answer_order_independence(n in 1..6usize, order in Just(()).prop_perturb(|(), mut rng| rng.next_u64()), early in 0..6usize) {
        let questions: Vec<Question> = (0..n).map(|i| Question { id: format!("q{i}"), prompt: format!("#{i}?") }).collect();
        let answers: Vec<(String, String)> = (0..n).map(|i| (format!("q{i}"), format!("answer {i}"))).collect();
        let agents = || vec![
            Script::new("asker", &[], &[]).emit(1, Effect { questions: questions.clone(), ..Effect::default() }).build(),
            Script::new("decider", &["answers"], &["decision"]).copy("answers", "decision", "!").build(),
        ];
        let finish = |permuted: &[(String, String)], answer_while_running: usize| {
            let mut job = Job::new(&JobSpec::new("ask"), &agents(), &[]).unwrap();
            job.step(&SerialExecutor, &NoInterrupt); // cycle 1 opens the questions; the job is still running
            let (first, rest) = permuted.split_at(answer_while_running.min(permuted.len()));
            for (q, a) in first { job.answer(q, a.clone()).unwrap(); }
            job.run(&SerialExecutor, &NoInterrupt);
            for (q, a) in rest {
                job.answer(q, a.clone()).unwrap();
                job.run(&SerialExecutor, &NoInterrupt);
            }
            prop_assert_eq!(job.status(), Status::Converged);
            Ok(job.context_hash())
        };
        let reference = finish(&answers, 0)?;
        let mut permuted = answers.clone();
        #[allow(clippy::cast_possible_truncation)]
        permuted.rotate_left(order as usize % n);
        if order % 3 == 0 { permuted.reverse(); }
        prop_assert_eq!(finish(&permuted, early)?, reference);
    }

    /// Rule 8: a required agent's failure ends the job `agent_failed`; an optional one's does not.
    #[test]
    fn required_agent_failure(kind in failure_kind(), required in any::<bool>(), others in system()) {
        let mut agents = build(&others.iter().map(|s| { let mut s = s.clone(); s.fail.clear(); s.required = false; s }).collect::<Vec<_>>());
        let mut critical = Script::new("aa-critical", &[], &[]).fail(1, Failure::new(kind, "down"));
        critical.required = required;
        agents.push(critical.build());
        let job = run(&spec(vec![], 8, 10_000), &agents, &[]);
        let r = job.result("j");
        prop_assert!(r.diagnostics.iter().any(|d| d.agent == "aa-critical" && d.kind == kind.into()));
        if required {
            prop_assert_eq!(r.status, Status::AgentFailed);
            prop_assert_eq!(r.cycles, 1);
        } else {
            prop_assert_ne!(r.status, Status::AgentFailed);
        }
    }

    /// Rule 9: structural and semantic invariants stop the job at the first cycle that breaks them; acceptance
    /// invariants judge only the fixed point.
    #[test]
    fn invariant_classes(length in 1..6usize, threshold in 2..8usize, class in proptest::sample::select(vec![InvariantClass::Structural, InvariantClass::Semantic, InvariantClass::Acceptance])) {
        // The chain grows `n` by one fact per cycle until it holds `length + 1` facts (seed included).
        let mut chain = Script::new("g", &["n"], &["n"]);
        chain.copy.push(Copy { from: "n".into(), to: "n".into(), suffix: String::new(), id_suffix: "+".into(), max_id_len: length + 1, confidence: None });
        let inv = InvariantScript { name: "small".into(), class, require: BTreeMap::new(), below: [("n".to_owned(), threshold)].into(), forbid: vec![] };
        let mut spec = spec_with(&[("n", "1", "")]);
        spec.invariants = vec!["small".into()];
        let job = run(&spec, &[chain.build()], &[inv.build()]);
        let total = length + 1;
        let violated = total >= threshold;
        prop_assert_eq!(job.status(), if violated { Status::InvariantViolated } else { Status::Converged });
        if violated {
            #[allow(clippy::cast_possible_truncation)]
            let expected = if class == InvariantClass::Acceptance { total as u32 } else { (threshold - 1) as u32 };
            prop_assert_eq!(job.cycles(), expected);
        }
    }
}
