//! The example agents of `agents/` and the example jobs of `examples/`, through the real host.

use converge_engine::{Job, JobResult, JobSpec, Status};
use converge_host::runner::Deadline;
use converge_host::{Catalog, Registry, Sandbox, SandboxConfig, roster};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use converge_tests::AGENTS;

fn sandbox() -> Arc<Sandbox> {
    Arc::new(Sandbox::new(SandboxConfig { instances: 16, pooling: true }).unwrap())
}

/// A fresh agents directory holding every example agent, as `agents/build` would leave it.
fn catalog(test: &str, sandbox: &Arc<Sandbox>) -> Catalog {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join("examples").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, path) in AGENTS {
        std::fs::copy(path, dir.join(format!("{name}.wasm"))).unwrap();
    }
    let catalog = Registry::new(Arc::clone(sandbox), &dir, Some(root.join("component-cache"))).refresh().unwrap();
    assert!(catalog.rejected.is_empty(), "{:?}", catalog.rejected);
    assert_eq!(catalog.loaded.len(), AGENTS.len());
    catalog
}

fn example(name: &str) -> JobSpec {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    JobSpec::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn start(catalog: &Catalog, sandbox: &Arc<Sandbox>, spec: &JobSpec) -> Job {
    let (agents, invariants) = roster(catalog, sandbox, spec, "test");
    Job::new(spec, &agents, &invariants).unwrap()
}

fn run(job: &mut Job, threads: usize) -> JobResult {
    job.run(&crate::support::rayon(threads), &Deadline::new(Duration::from_mins(1)));
    job.result("example")
}

fn fact<'a>(result: &'a JobResult, key: &str, id: &str) -> Option<&'a str> {
    result.facts.iter().find(|f| f.key == key && f.id == id).map(|f| f.content.as_str())
}

#[test]
fn market_entry_converges_with_a_decision_and_a_report() {
    let sandbox = sandbox();
    let catalog = catalog("market-entry", &sandbox);
    let spec = example("market-entry.json");
    let result = run(&mut start(&catalog, &sandbox, &spec), 2);
    assert_eq!(result.status, Status::Converged, "{:#?}", result.diagnostics);
    assert!(result.diagnostics.is_empty(), "{:#?}", result.diagnostics);
    assert!(result.open_questions.is_empty());
    let decision = fact(&result, "decision/final", "strategy").unwrap();
    assert!(decision.contains("growth-direct"), "{decision}");
    assert!(fact(&result, "report", "summary").is_some());
    assert_eq!(result.cycles, 7);
}

#[test]
fn market_entry_is_deterministic_across_threads_and_runs() {
    let sandbox = sandbox();
    let catalog = catalog("determinism", &sandbox);
    let spec = example("market-entry.json");
    let mut hashes = Vec::new();
    for threads in [1, 2] {
        for _ in 0..3 {
            let result = run(&mut start(&catalog, &sandbox, &spec), threads);
            assert!(result.deterministic);
            hashes.push(result.context_hash);
        }
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
}

#[test]
fn review_waits_for_a_human_and_resumes_on_the_answer() {
    let sandbox = sandbox();
    let catalog = catalog("review", &sandbox);
    let spec = example("review.json");
    let mut job = start(&catalog, &sandbox, &spec);
    let waiting = run(&mut job, 2);
    assert_eq!(waiting.status, Status::Waiting);
    let asked: Vec<(&str, &str)> = waiting.open_questions.iter().map(|q| (q.id.as_str(), q.agent.as_str())).collect();
    assert_eq!(asked, [("strategy-choice", "governance")]);
    assert!(fact(&waiting, "decision/final", "strategy").is_none());

    job.answer("strategy-choice", "defensive-niche".into()).unwrap();
    let done = run(&mut job, 2);
    assert_eq!(done.status, Status::Converged, "{:#?}", done.diagnostics);
    let decision = fact(&done, "decision/final", "strategy").unwrap();
    assert!(decision.contains("defensive-niche"), "{decision}");
    assert!(fact(&done, "report", "summary").is_some());
    assert_eq!(fact(&done, "answers", "strategy-choice"), Some("defensive-niche"));
}
