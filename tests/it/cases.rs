//! Data-driven engine cases: `tests/cases/<name>/case.json` holds a job, scripted agents and invariants, and
//! answers to give when the job waits; `expected.json` holds the result and a compact trace. Each case runs on
//! one thread and on two, which must agree byte for byte. `UPDATE_EXPECT=1` rewrites the expectations.

use crate::support::{InvariantScript, Script, rayon};
use converge_engine::{Executor, Job, JobSpec, NoInterrupt, SerialExecutor};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    job: Value,
    #[serde(default)]
    agents: Vec<Script>,
    #[serde(default)]
    invariants: Vec<InvariantScript>,
    /// `[question, answer]` pairs, given in this order whenever the job waits.
    #[serde(default)]
    answers: Vec<(String, String)>,
}

fn run_case<E: Executor>(case: &Case, executor: &E) -> Value {
    let spec = JobSpec::from_json(&case.job.to_string()).unwrap();
    let agents: Vec<_> = case.agents.iter().cloned().map(Script::build).collect();
    let invariants: Vec<_> = case.invariants.iter().cloned().map(InvariantScript::build).collect();
    let mut job = Job::new(&spec, &agents, &invariants).unwrap();
    let mut answers = case.answers.iter();
    while job.run(executor, &NoInterrupt) == converge_engine::Status::Waiting {
        let open: Vec<String> = job.open_questions().into_iter().map(|q| q.id).collect();
        let mut gave = false;
        for (q, a) in answers.by_ref() {
            job.answer(q, a.clone()).unwrap();
            gave = true;
            if job.ready_to_resume() {
                break;
            }
        }
        if !gave {
            assert!(!open.is_empty());
            break;
        }
    }
    let trace: Vec<Value> = job
        .trace()
        .iter()
        .map(|t| {
            json!({"cycle": t.cycle, "answers": t.answers, "eligible": t.eligible, "inserted": t.inserted,
                   "duplicates": t.duplicates, "rejected": t.rejected, "status": t.status})
        })
        .collect();
    json!({"result": job.result("case"), "trace": trace})
}

fn check(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join("case.json")).map_err(|e| format!("case.json: {e}"))?;
    let case: Case = serde_json::from_str(&text).map_err(|e| format!("case.json: {e}"))?;
    let one = serde_json::to_string_pretty(&run_case(&case, &SerialExecutor)).unwrap() + "\n";
    let two = serde_json::to_string_pretty(&run_case(&case, &rayon(2))).unwrap() + "\n";
    if one != two {
        return Err("1 and 2 threads disagree".into());
    }
    let expected = dir.join("expected.json");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&expected, &one).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let want = std::fs::read_to_string(&expected)
        .map_err(|e| format!("expected.json: {e} (run with UPDATE_EXPECT=1 to create it)"))?;
    if want != one {
        return Err(format!("result differs from expected.json (UPDATE_EXPECT=1 rewrites it); got:\n{one}"));
    }
    Ok(())
}

#[test]
fn cases() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cases");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "expected at least ten cases in {}", root.display());
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| check(d).err().map(|e| format!("{}: {e}", d.file_name().unwrap().to_string_lossy())))
        .collect();
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}
