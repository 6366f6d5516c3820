//! `converge run JOB.json`: one job in-process, through the same driver a worker uses.

use crate::Exit;
use crate::load::{Load, executor, progress, thread_count};
use converge_engine::{CycleTrace, Inputs, Job, JobSpec, Journal, Status, drive};
use converge_runtime::{WasmRuntime, job_seed};
use converge_service::{DEFAULT_TENANT, Deadline, Runtime};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Prints a progress line per cycle; has no answers to give.
struct Progress;

impl Journal for Progress {
    type Error = std::convert::Infallible;

    fn cycle(&mut self, _job: &Job, trace: &CycleTrace) -> Result<(), Self::Error> {
        progress(trace);
        Ok(())
    }

    fn waiting(&mut self, _job: &Job, _given: &BTreeSet<String>) -> Result<BTreeMap<String, String>, Self::Error> {
        Ok(BTreeMap::new())
    }
}

pub(crate) fn run(path: &Path, opts: &Load, threads: Option<usize>) -> Result<u8, Exit> {
    let text = std::fs::read_to_string(path).map_err(|e| Exit::input(format!("{}: {e}", path.display())))?;
    let spec = JobSpec::from_json(&text).map_err(|e| Exit::input(format!("{}: {e}", path.display())))?;
    let threads = thread_count(threads)?;
    let runtime = WasmRuntime::new(opts.registry(threads + 1)?);
    let inventory = runtime.refresh().map_err(|e| Exit::input(e.to_string()))?;
    for r in &inventory.rejected {
        eprintln!("converge: skipped {}: {}", r.file, r.reason);
    }
    let executor = executor(threads)?;
    let id = format!("run-{}", &converge_engine::hex(&job_seed(&spec))[..16]);
    let (agents, invariants) = runtime.roster(&spec, DEFAULT_TENANT, &id);
    let mut job = Job::new(&spec, &agents, &invariants).map_err(|e| Exit::input(e.to_string()))?;
    let deadline = Deadline::new(Duration::from_millis(spec.budget.job_timeout_ms));
    let Ok(_) = drive(&mut job, &executor, &deadline, Inputs::default(), &mut Progress);
    let mut result = job.result(&id);
    result.stats.wall_time_ms = deadline.elapsed_ms();
    let json = serde_json::to_string_pretty(&result).map_err(|e| Exit::failure(format!("encoding the result: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").map_err(|e| Exit::failure(format!("writing the result: {e}")))?;
    eprintln!(
        "converge: {} after {} cycles, {} facts, context_hash {}",
        result.status,
        result.cycles,
        result.facts.len(),
        result.context_hash
    );
    Ok(u8::from(result.status != Status::Converged))
}
