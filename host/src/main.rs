//! The `converge` binary: `run` one job in-process, list the `agents` that load.

use clap::{Parser, Subcommand};
use converge_engine::{CycleTrace, JobSpec, Outcome, RayonExecutor, Status};
use converge_host::{Catalog, HostError, Registry, Sandbox, SandboxConfig, job_seed, run_job};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Converge: sandboxed WebAssembly agents that converge on a shared context.
#[derive(Parser)]
#[command(name = "converge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one job in-process: a progress line per cycle on stderr, the result JSON on stdout.
    /// Exit 0 converged, 1 any other status, 2 bad input.
    Run {
        /// The job spec (SPEC §4 JSON).
        job: PathBuf,
        #[command(flatten)]
        load: Load,
        /// Threads for the parallel phase (default: the number of cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// List what loads from the agents directory, with hashes, and what is rejected and why.
    Agents {
        #[command(flatten)]
        load: Load,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct Load {
    /// The agents directory: every `*.wasm` in it is loaded.
    #[arg(long, default_value = "agents")]
    agents: PathBuf,
    /// Where compiled components are cached (default: `<data>/cache`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The data directory.
    #[arg(long, default_value = ".converge")]
    data: PathBuf,
}

/// A failure with the exit code it maps to.
struct Exit(u8, String);

impl From<HostError> for Exit {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Engine(_) => Exit(1, e.to_string()),
            _ => Exit(2, e.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run { job, load, threads } => run(&job, &load, threads),
        Command::Agents { load, json } => agents(&load, json),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Exit(code, message)) => {
            eprintln!("converge: {message}");
            ExitCode::from(code)
        }
    }
}

fn load(load: &Load, threads: usize) -> Result<(Arc<Sandbox>, Catalog), Exit> {
    let instances = u32::try_from(threads.saturating_mul(4)).unwrap_or(u32::MAX).max(16);
    let sandbox = Arc::new(Sandbox::new(SandboxConfig { instances, pooling: true })?);
    let cache = load.cache.clone().unwrap_or_else(|| load.data.join("cache"));
    let mut registry = Registry::new(Arc::clone(&sandbox), &load.agents, Some(cache));
    let catalog = registry.refresh()?;
    Ok((sandbox, catalog))
}

fn run(path: &PathBuf, opts: &Load, threads: Option<usize>) -> Result<u8, Exit> {
    let text = std::fs::read_to_string(path).map_err(|e| Exit(2, format!("{}: {e}", path.display())))?;
    let spec = JobSpec::from_json(&text).map_err(|e| Exit(2, format!("{}: {e}", path.display())))?;
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    if threads == 0 {
        return Err(Exit(2, "--threads must be at least 1".into()));
    }
    let (sandbox, catalog) = load(opts, threads)?;
    for r in &catalog.rejected {
        eprintln!("converge: skipped {}: {}", r.file, r.reason);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("converge-agent-{i}"))
        .build()
        .map_err(|e| Exit(1, format!("starting {threads} threads: {e}")))?;
    let executor = RayonExecutor::new(Arc::new(pool));
    let id = format!("run-{}", &converge_engine::hex(&job_seed(&spec))[..16]);
    let result = run_job(&catalog, &sandbox, &spec, &id, &executor, progress)?;
    let json = serde_json::to_string_pretty(&result).map_err(|e| Exit(1, format!("encoding the result: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").map_err(|e| Exit(1, format!("writing the result: {e}")))?;
    eprintln!(
        "converge: {} after {} cycles, {} facts, context_hash {}",
        result.status,
        result.cycles,
        result.facts.len(),
        result.context_hash
    );
    Ok(u8::from(result.status != Status::Converged))
}

fn progress(t: &CycleTrace) {
    let failed = t.agents.iter().filter(|a| matches!(a.outcome, Outcome::Failed(_))).count();
    eprintln!(
        "cycle {}: {} agents, +{} facts ({} duplicate, {} rejected), {} promoted, {} failed, {} questions -> {}",
        t.cycle,
        t.agents.len(),
        t.inserted,
        t.duplicates,
        t.rejected,
        t.promoted.len(),
        failed,
        t.questions.len(),
        t.status
    );
}

fn agents(opts: &Load, json: bool) -> Result<u8, Exit> {
    let (_sandbox, catalog) = load(opts, 1)?;
    if json {
        let value = serde_json::json!({
            "agents": catalog.agents().map(|(l, i)| serde_json::json!({
                "name": l.name, "file": l.file, "digest": l.digest, "size": l.size,
                "reads": i.reads, "writes": i.writes, "tools": i.tools, "required": i.required,
                "description": i.description,
            })).collect::<Vec<_>>(),
            "invariants": catalog.invariants().map(|(l, i)| serde_json::json!({
                "name": l.name, "file": l.file, "digest": l.digest, "size": l.size,
                "class": i.class, "description": i.description,
            })).collect::<Vec<_>>(),
            "rejected": catalog.rejected,
        });
        let text = serde_json::to_string_pretty(&value).map_err(|e| Exit(1, e.to_string()))?;
        println!("{text}");
        return Ok(0);
    }
    for (l, i) in catalog.agents() {
        println!(
            "agent      {:<24} {}  reads [{}] writes [{}]{}",
            l.name,
            &l.digest[..16],
            i.reads.join(", "),
            i.writes.join(", "),
            if i.required { " required" } else { "" }
        );
    }
    for (l, i) in catalog.invariants() {
        println!("invariant  {:<24} {}  {:?}", l.name, &l.digest[..16], i.class);
    }
    for r in &catalog.rejected {
        println!("rejected   {:<24} {}", r.file, r.reason);
    }
    Ok(0)
}
