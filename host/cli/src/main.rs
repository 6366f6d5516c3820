//! The `converge` binary: clap and wiring only. One file per command; every command returns its exit code or an
//! [`Exit`] naming the problem, printed once here.

mod agents;
mod bench;
mod load;
mod replay;
mod run;
mod serve;
mod store;
mod telemetry;
mod validate_tool;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
        load: load::Load,
        /// Threads for the parallel phase (default: the number of cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Serve the HTTP API (SPEC §5) with the embedded store under `--data`, or a shared PostgreSQL (`--store`).
    Serve(Box<serve::Serve>),
    /// Re-run a stored job from its spec and answers and compare `context_hash` and every tool call (tool,
    /// digest, input, outcome, output). Exit 0 identical, 1 different,
    /// 2 no such job or no result yet.
    Replay {
        /// The job id.
        job: String,
        #[command(flatten)]
        load: load::Load,
        #[command(flatten)]
        store: store::StoreArg,
        /// Threads for the parallel phase (default: the number of cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Validate an untrusted tool (SPEC §6) and print the report as JSON. Exit 0 accepted, 1 rejected or
    /// needs review, 2 unusable input (an unreadable file, a malformed manifest). Nothing is stored: submit
    /// through `POST /v1/tools/validate` to make a tool callable.
    ValidateTool {
        /// The tool component.
        tool: PathBuf,
        /// The manifest: `{name, description, tests, requested, limits}`.
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Run one job many times in-process with its agents loaded once; print per-job and per-call medians and
    /// percentiles, calls/s and fuel (`--json` for JSON). Exit 0 converged, 1 any other status or a run that
    /// differs from the first, 2 bad input.
    Bench(Box<bench::Bench>),
    /// List what loads from the agents and tools directories, with hashes, and what is rejected and why.
    Agents {
        #[command(flatten)]
        load: load::Load,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A failure, with the exit code it maps to: 2 for input the user can fix (a file, a flag, a job id), 1 for
/// everything else (a store, a thread, the sandbox).
pub(crate) struct Exit(pub u8, pub String);

impl Exit {
    /// Exit 2: unusable input.
    pub(crate) fn input(message: impl Into<String>) -> Self {
        Self(2, message.into())
    }

    /// Exit 1: a failure that is not the input's fault.
    pub(crate) fn failure(message: impl std::fmt::Display) -> Self {
        Self(1, message.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run { job, load, threads } => run::run(&job, &load, threads),
        Command::Agents { load, json } => agents::agents(&load, json),
        Command::ValidateTool { tool, manifest } => validate_tool::validate_tool(&tool, &manifest),
        Command::Serve(opts) => serve::serve(&opts),
        Command::Bench(args) => bench::bench(&args),
        Command::Replay { job, load, store, threads } => replay::replay(&job, &load, &store, threads),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Exit(code, message)) => {
            eprintln!("converge: {message}");
            ExitCode::from(code)
        }
    }
}
