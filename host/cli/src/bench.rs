//! `converge bench JOB.json`: one job run many times in-process with its agents loaded once, through the same
//! driver a worker uses, and what it cost: per job and per call medians and percentiles, calls/s, fuel. For
//! authors measuring a workflow without HTTP or a store, and for side-by-side comparisons with other runtimes.

use crate::Exit;
use crate::load::{Load, executor, thread_count};
use converge_engine::{CycleTrace, Inputs, Job, JobSpec, Journal, drive};
use converge_runtime::{WasmRuntime, job_seed};
use converge_service::{DEFAULT_TENANT, Deadline, Runtime};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct Bench {
    /// The job spec (SPEC §4 JSON).
    job: PathBuf,
    #[command(flatten)]
    load: Load,
    /// Threads for the parallel phase (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Runs measured.
    #[arg(long, default_value_t = 100)]
    runs: u32,
    /// Runs before measuring (compiled code paged in, caches warm); not counted.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Collects each call's wall time; gives no answers.
#[derive(Default)]
struct Calls {
    time_us: Vec<u64>,
}

impl Journal for Calls {
    type Error = std::convert::Infallible;

    fn cycle(&mut self, _job: &Job, trace: &CycleTrace) -> Result<(), Self::Error> {
        self.time_us.extend(trace.agents.iter().map(|a| a.time_us));
        Ok(())
    }

    fn waiting(&mut self, _job: &Job, _given: &BTreeSet<String>) -> Result<BTreeMap<String, String>, Self::Error> {
        Ok(BTreeMap::new())
    }
}

/// Median and tail of some samples.
#[derive(Serialize)]
struct Spread {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Spread {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            samples[((samples.len() - 1) as f64 * q).round() as usize]
        };
        let mean = if samples.is_empty() { 0.0 } else { samples.iter().sum::<f64>() / samples.len() as f64 };
        Self { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0), mean }
    }
}

#[derive(Serialize)]
struct Report {
    job: String,
    runs: u32,
    threads: usize,
    status: String,
    cycles: u32,
    context_hash: String,
    /// Wall time of a whole job, ms.
    job_ms: Spread,
    /// Wall time of one agent call as the host measured it, µs.
    call_us: Spread,
    calls_per_job: u64,
    calls_per_second: f64,
    jobs_per_second: f64,
    fuel_per_job: u64,
    tool_calls_per_job: u64,
}

pub(crate) fn bench(args: &Bench) -> Result<u8, Exit> {
    let path = &args.job;
    if args.runs == 0 {
        return Err(Exit::input("--runs must be at least 1"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Exit::input(format!("{}: {e}", path.display())))?;
    let spec = JobSpec::from_json(&text).map_err(|e| Exit::input(format!("{}: {e}", path.display())))?;
    let threads = thread_count(args.threads)?;
    let runtime = WasmRuntime::new(args.load.registry(threads + 1)?);
    let inventory = runtime.refresh().map_err(|e| Exit::input(e.to_string()))?;
    for r in &inventory.rejected {
        eprintln!("converge: skipped {}: {}", r.file, r.reason);
    }
    let executor = executor(threads)?;
    let id = format!("bench-{}", &converge_engine::hex(&job_seed(&spec))[..16]);
    let mut first: Option<converge_engine::JobResult> = None;
    let (mut job_ms, mut call_us) = (Vec::new(), Vec::new());
    let mut measured = Duration::ZERO;
    for i in 0..args.warmup + args.runs {
        let started = Instant::now();
        let (agents, invariants) = runtime.roster(&spec, DEFAULT_TENANT, &id);
        let mut job = Job::new(&spec, &agents, &invariants).map_err(|e| Exit::input(e.to_string()))?;
        let deadline = Deadline::new(Duration::from_millis(spec.budget.job_timeout_ms));
        let mut calls = Calls::default();
        let Ok(_) = drive(&mut job, &executor, &deadline, Inputs::default(), &mut calls);
        let result = job.result(&id);
        let took = started.elapsed();
        // Same input, same output: a run that differs from the first is a finding, not a sample.
        match &first {
            None => first = Some(result),
            Some(f) if f.context_hash != result.context_hash || f.status != result.status => {
                return Err(Exit::failure(format!(
                    "run {i} ended {} with context_hash {}, run 0 {} with {}: the job is not deterministic",
                    result.status, result.context_hash, f.status, f.context_hash
                )));
            }
            Some(_) => {}
        }
        if i >= args.warmup {
            measured += took;
            job_ms.push(took.as_secs_f64() * 1000.0);
            #[allow(clippy::cast_precision_loss)]
            call_us.extend(calls.time_us.iter().map(|t| *t as f64));
        }
    }
    let Some(result) = first else { return Err(Exit::failure("no run")) };
    let secs = measured.as_secs_f64().max(f64::MIN_POSITIVE);
    #[allow(clippy::cast_precision_loss)]
    let report = Report {
        job: path.display().to_string(),
        runs: args.runs,
        threads,
        status: result.status.to_string(),
        cycles: result.cycles,
        context_hash: result.context_hash.clone(),
        calls_per_job: result.stats.agent_calls,
        calls_per_second: call_us.len() as f64 / secs,
        jobs_per_second: f64::from(args.runs) / secs,
        fuel_per_job: result.stats.fuel,
        tool_calls_per_job: result.stats.tool_calls,
        job_ms: Spread::of(job_ms),
        call_us: Spread::of(call_us),
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let json =
            serde_json::to_string_pretty(&report).map_err(|e| Exit::failure(format!("encoding the report: {e}")))?;
        writeln!(out, "{json}")
    } else {
        write_text(&mut out, &report)
    };
    written.map_err(|e| Exit::failure(format!("writing the report: {e}")))?;
    Ok(u8::from(result.status != converge_engine::Status::Converged))
}

fn write_text(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: {} runs on {} threads, {} after {} cycles ({})",
        r.job, r.runs, r.threads, r.status, r.cycles, r.context_hash
    )?;
    writeln!(
        out,
        "job   p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({:.1} jobs/s)",
        r.job_ms.p50, r.job_ms.p90, r.job_ms.p99, r.job_ms.max, r.jobs_per_second
    )?;
    writeln!(
        out,
        "call  p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  max {:.1} µs  ({} calls per job, {:.0} calls/s)",
        r.call_us.p50, r.call_us.p90, r.call_us.p99, r.call_us.max, r.calls_per_job, r.calls_per_second
    )?;
    writeln!(out, "fuel  {} per job, {} tool calls per job", r.fuel_per_job, r.tool_calls_per_job)
}
