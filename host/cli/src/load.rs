//! What every command that loads components shares: the directories, the thread count, the sandbox, the
//! registry over them, and the executor.

use crate::Exit;
use converge_engine::RayonExecutor;
use converge_runtime::Registry;
use converge_sandbox::{GUEST_STACK, Sandbox, SandboxConfig};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub(crate) struct Load {
    /// The agents directory: every `*.wasm` in it is loaded.
    #[arg(long, default_value = "agents")]
    pub agents: PathBuf,
    /// The trusted tools directory: every `*.wasm` in it is a tool agents may call (default: `<agents>/tools`,
    /// when it exists).
    #[arg(long)]
    pub tools: Option<PathBuf>,
    /// Where compiled components are cached (default: `<data>/cache`).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// The data directory.
    #[arg(long, default_value = ".converge")]
    pub data: PathBuf,
}

impl Load {
    /// The tools directory: the one given, or `<agents>/tools` when that exists.
    fn tools_dir(&self) -> Option<PathBuf> {
        self.tools.clone().or_else(|| Some(self.agents.join("tools")).filter(|d| d.is_dir()))
    }

    /// The compiled-code cache.
    fn cache_dir(&self) -> PathBuf {
        self.cache.clone().unwrap_or_else(|| self.data.join("cache"))
    }

    /// A sandbox with room for `guest_threads` threads calling guests at once, and the registry over the
    /// directories (nothing loaded yet).
    pub(crate) fn registry(&self, guest_threads: usize) -> Result<Registry, Exit> {
        let sandbox = Arc::new(Sandbox::new(SandboxConfig::for_threads(guest_threads)).map_err(Exit::failure)?);
        Ok(Registry::new(sandbox, &self.agents, Some(self.cache_dir())).with_tools(self.tools_dir()))
    }
}

/// The threads asked for, or the number of cores.
pub(crate) fn thread_count(threads: Option<usize>) -> Result<usize, Exit> {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    if threads == 0 {
        return Err(Exit::input("--threads must be at least 1"));
    }
    Ok(threads)
}

/// A rayon pool of `threads` whose threads have room for guest calls.
pub(crate) fn executor(threads: usize) -> Result<RayonExecutor, Exit> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("converge-agent-{i}"))
        .stack_size(GUEST_STACK)
        .build()
        .map_err(|e| Exit::failure(format!("starting {threads} threads: {e}")))?;
    Ok(RayonExecutor::new(Arc::new(pool)))
}

/// A progress line for a cycle, on stderr.
pub(crate) fn progress(t: &converge_engine::CycleTrace) {
    let failed = t.agents.iter().filter(|a| matches!(a.outcome, converge_engine::Outcome::Failed(_))).count();
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
