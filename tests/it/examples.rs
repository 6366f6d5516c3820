//! The example agents of `agents/` and the example jobs of `examples/`, through the real host.

use converge_engine::{Job, JobResult, JobSpec, Status};
use converge_runtime::{Catalog, Registry, roster};
use converge_sandbox::{Sandbox, SandboxConfig};
use converge_service::Deadline;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use converge_tests::{AGENTS, TOOLS};

fn sandbox() -> Arc<Sandbox> {
    Arc::new(Sandbox::new(SandboxConfig { instances: 16, pooling: true, ..SandboxConfig::default() }).unwrap())
}

/// A fresh agents directory holding every example agent and, under `tools/`, every example tool, as
/// `agents/build` would leave it.
fn catalog(test: &str, sandbox: &Arc<Sandbox>) -> Catalog {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join("examples").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, path) in AGENTS {
        std::fs::copy(path, dir.join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::create_dir_all(dir.join("tools")).unwrap();
    for (name, path) in TOOLS {
        std::fs::copy(path, dir.join("tools").join(format!("{name}.wasm"))).unwrap();
    }
    let catalog = Registry::new(Arc::clone(sandbox), &dir, Some(root.join("component-cache")))
        .with_tools(Some(dir.join("tools")))
        .refresh()
        .unwrap();
    assert!(catalog.rejected.is_empty() && catalog.rejected_tools.is_empty(), "{catalog:?}");
    assert_eq!(catalog.tools.len(), TOOLS.len());
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

#[test]
fn the_example_tools_pass_their_manifests_and_the_workflow_calls_them() {
    use converge_runtime::tools::validate;
    use converge_store::{Manifest, Verdict};
    let sandbox = sandbox();
    for (name, path) in TOOLS {
        let manifest =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agents/tools").join(name).join("manifest.json");
        let manifest = Manifest::parse(&std::fs::read(manifest).unwrap()).unwrap();
        let report = validate(&sandbox, None, &std::fs::read(path).unwrap(), &manifest).report;
        assert_eq!(report.verdict, Verdict::Accepted, "{report:#?}");
    }
    let catalog = catalog("with-tools", &sandbox);
    let result = run(&mut start(&catalog, &sandbox, &example("market-entry.json")), 2);
    assert_eq!(result.status, Status::Converged);
    let (score, rank) = (result.stats.tools["score"], result.stats.tools["rank"]);
    assert_eq!((score.calls, score.failures, rank.calls, rank.failures), (3, 0, 1, 0), "{:?}", result.stats);
    assert_eq!(result.stats.tool_calls, 4);
}
