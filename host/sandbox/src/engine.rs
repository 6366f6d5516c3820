//! The [`Sandbox`]: one wasmtime engine configured for agents, its linker, and the epoch ticker that gives
//! every call its wall-clock backstop.

use crate::call::State;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch ticks; call deadlines are counted in ticks.
pub const TICK: Duration = Duration::from_millis(1);

/// Stack size of every host thread that runs guest calls: room for an agent's wasm stack (1 MiB) and, nested
/// inside its host call, a tool's, with the host frames between.
pub const GUEST_STACK: usize = 8 << 20;

/// Most table elements one table may hold.
pub(crate) const TABLE_ELEMENTS: usize = 100_000;
/// Largest memory a job may ask for (`budget.memory_mb` is at most 4096).
const MAX_MEMORY: u64 = 4096 * 1024 * 1024;

/// The sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// wasmtime refused the engine configuration (for example, no virtual memory for the pool).
    #[error("sandbox: configuring the engine: {0}")]
    Engine(String),
    /// WASI or the converge interfaces could not be added to the linker.
    #[error("sandbox: linking the host interfaces: {0}")]
    Linker(String),
    /// The epoch thread could not be started.
    #[error("sandbox: starting the epoch thread: {0}")]
    Thread(String),
}

/// How often the ticker reads `/proc/swaps` again while the fast reset is in use.
const SWAP_RECHECK: Duration = Duration::from_secs(1);

/// Sizing of the sandbox.
#[derive(Debug, Clone, Copy)]
pub struct SandboxConfig {
    /// Instances that may exist at once (pooling slots): every thread that runs guest calls may hold an
    /// agent's instance and, nested, a tool's.
    pub instances: u32,
    /// Use the pooling allocator (fast instantiation); off, every instance maps its own memory.
    pub pooling: bool,
    /// How a pooled slot's memory is made fresh for the next instance.
    pub reset: MemoryReset,
}

impl SandboxConfig {
    /// Enough pooling slots for `threads` threads that run guest calls at once (at least 32).
    pub fn for_threads(threads: usize) -> Self {
        Self { instances: u32::try_from(threads.saturating_mul(4)).unwrap_or(u32::MAX).max(32), ..Self::default() }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { instances: 64, pooling: true, reset: MemoryReset::Auto }
    }
}

/// How a pooled slot's memory and tables are made fresh between two instances (SPEC §3: the next instance in a
/// slot never sees a byte of the last one, on every host).
///
/// Both resets zero (or copy back from the module's image) the pages they keep resident and decommit the rest.
/// The fast one asks Linux (`PAGEMAP_SCAN`) which pages the last instance wrote and touches only those; the
/// full one treats the first `keep_resident` bytes as written. In wasmtime 48 the fast reset looks only at
/// pages that are present: a written page the kernel swapped out is neither reset nor decommitted, and the
/// next instance in that slot reads it back (upstream PR bytecodealliance/wasmtime#14357). So the fast reset is
/// safe only while no swap is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryReset {
    /// The fast reset if `/proc/swaps` lists no active swap when the sandbox starts, the full reset otherwise;
    /// with the fast reset, `/proc/swaps` is read again every second and [`Sandbox::swap_appeared`] turns true
    /// if swap was turned on since (the process must then stop running guests: see `converge serve`).
    #[default]
    Auto,
    /// The full reset, whatever the host.
    Full,
    /// The fast reset even with swap active. It leaks swapped-out pages between instances: only the test that
    /// proves the leak exists (and so that [`MemoryReset::Auto`] prevents it) uses this.
    FastEvenWithSwap,
}

/// Which reset a sandbox uses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetChoice {
    /// The fast (`PAGEMAP_SCAN`) reset; `false` is the full reset.
    pub fast: bool,
    /// Why, in words: for the start-up log.
    pub reason: String,
}

/// The swap areas `/proc/swaps` lists as active: every line after the header, by its first field.
pub fn active_swaps(proc_swaps: &str) -> Vec<String> {
    proc_swaps.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

/// The swap areas active on this host.
///
/// # Errors
/// The reason it cannot be known (no `/proc/swaps`): the caller must then assume swap is active.
pub fn swap_on_host() -> Result<Vec<String>, String> {
    std::fs::read_to_string("/proc/swaps").map(|s| active_swaps(&s)).map_err(|e| format!("reading /proc/swaps: {e}"))
}

impl MemoryReset {
    /// Decide, given what [`swap_on_host`] read.
    pub fn choose(self, swap: &Result<Vec<String>, String>) -> ResetChoice {
        match (self, swap) {
            (Self::Full, _) => ResetChoice { fast: false, reason: "the full reset was asked for".into() },
            (Self::FastEvenWithSwap, _) => {
                ResetChoice { fast: true, reason: "the fast reset was forced (it leaks pages swapped out)".into() }
            }
            (Self::Auto, Ok(swaps)) if swaps.is_empty() => {
                ResetChoice { fast: true, reason: "no swap is active (re-checked every second)".into() }
            }
            (Self::Auto, Ok(swaps)) => ResetChoice {
                fast: false,
                reason: format!("swap is active ({}): the fast reset would leak pages swapped out", swaps.join(", ")),
            },
            (Self::Auto, Err(e)) => {
                ResetChoice { fast: false, reason: format!("whether swap is active is unknown ({e})") }
            }
        }
    }
}

/// One wasmtime engine with its linker and epoch ticker. Share it behind an `Arc`.
pub struct Sandbox {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<State>,
    reset: ResetChoice,
    swap_appeared: Arc<AtomicBool>,
    ticker: Option<Ticker>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// An engine configured for agents: fuel, epochs, NaN canonicalisation, only the proposals Rust, Python and
    /// JavaScript components need, the pooling allocator tuned to keep two threads scaling.
    ///
    /// # Errors
    /// The engine or the linker could not be built, or the epoch thread could not start.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let reset = if config.pooling {
            config.reset.choose(&swap_on_host())
        } else {
            ResetChoice { fast: false, reason: "no pooling: every instance maps fresh memory".into() }
        };
        if reset.fast || !config.pooling {
            tracing::info!(fast = reset.fast, reason = %reset.reason, "sandbox memory reset");
        } else {
            tracing::warn!(fast = false, reason = %reset.reason, "sandbox memory reset: the full one, calls are slower");
        }
        let engine =
            Engine::new(&engine_config(config, reset.fast)).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let linker = crate::wasi::linker(&engine).map_err(|e| SandboxError::Linker(format!("{e:#}")))?;
        let swap_appeared = Arc::new(AtomicBool::new(false));
        let watch = (reset.fast && config.reset == MemoryReset::Auto).then(|| Arc::clone(&swap_appeared));
        let ticker = Ticker::start(engine.clone(), watch)?;
        Ok(Self { engine, linker, reset, swap_appeared, ticker: Some(ticker) })
    }

    /// Which memory reset this sandbox uses, and why.
    pub fn memory_reset(&self) -> &ResetChoice {
        &self.reset
    }

    /// Swap was turned on after this sandbox started with the fast reset: from now on a guest may read what a
    /// guest before it in the same slot wrote, so the process must stop running guests and start again (it
    /// then chooses the full reset). Checked every second.
    pub fn swap_appeared(&self) -> bool {
        self.swap_appeared.load(Ordering::Relaxed)
    }

    /// The wasmtime engine, for tests and benchmarks that instantiate a module under exactly this
    /// configuration.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop();
        }
    }
}

fn engine_config(sandbox: SandboxConfig, fast_reset: bool) -> Config {
    let mut c = Config::new();
    c.consume_fuel(true);
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    // Determinism: NaNs canonicalised, relaxed SIMD (whose results vary by CPU) off; threads and component
    // async are not compiled in (cargo features).
    c.cranelift_nan_canonicalization(true);
    c.wasm_relaxed_simd(false);
    c.wasm_memory64(false);
    c.wasm_gc(false);
    c.wasm_stack_switching(false);
    c.wasm_wide_arithmetic(false);
    c.max_wasm_stack(1024 * 1024);
    c.parallel_compilation(true);
    c.wasm_backtrace_max_frames(None);
    if sandbox.pooling {
        let n = sandbox.instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(32))
            .total_memories(n.saturating_mul(4))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_memories_per_module(2)
            .max_tables_per_module(4)
            .table_elements(TABLE_ELEMENTS)
            .max_memory_size(usize::try_from(MAX_MEMORY).unwrap_or(usize::MAX))
            .max_component_instance_size(1024 * 1024)
            .max_core_instance_size(1024 * 1024)
            // Measured on 2 cores: without these, page faults and madvise make two threads slower than one.
            .linear_memory_keep_resident(8 * 1024 * 1024)
            .table_keep_resident(4 * 1024 * 1024)
            // The fast reset only where it cannot leak (see `MemoryReset`).
            .pagemap_scan(if fast_reset { Enabled::Auto } else { Enabled::No });
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// Increments the engine's epoch every [`TICK`] until stopped; given `swap`, reads `/proc/swaps` every
/// [`SWAP_RECHECK`] and sets it (once, with an error logged) when swap has been turned on.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: Engine, swap: Option<Arc<AtomicBool>>) -> Result<Self, SandboxError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("converge-epoch".into())
            .spawn(move || {
                let mut checked = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                    if let Some(appeared) = swap.as_ref().filter(|a| !a.load(Ordering::Relaxed))
                        && checked.elapsed() >= SWAP_RECHECK
                    {
                        checked = Instant::now();
                        let now = swap_on_host();
                        if !matches!(&now, Ok(s) if s.is_empty()) {
                            tracing::error!(
                                swap = ?now,
                                "swap was turned on after the sandbox started with the fast memory reset: \
                                 guests must stop running until the process starts again"
                            );
                            appeared.store(true, Ordering::Relaxed);
                        }
                    }
                }
            })
            .map_err(|e| SandboxError::Thread(e.to_string()))?;
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread only sleeps and increments; if it panicked there is nothing to recover.
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::{MemoryReset, active_swaps};

    const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    #[test]
    fn swap_areas_are_read_from_proc_swaps() {
        assert!(active_swaps(HEADER).is_empty());
        assert!(active_swaps("").is_empty());
        let two = format!("{HEADER}/dev/zram0  partition\t8388604\t0\t100\n/swapfile  file  65532  0  -2\n");
        assert_eq!(active_swaps(&two), ["/dev/zram0", "/swapfile"]);
    }

    #[test]
    fn the_fast_reset_only_without_swap() {
        assert!(MemoryReset::Auto.choose(&Ok(vec![])).fast);
        assert!(!MemoryReset::Auto.choose(&Ok(vec!["/dev/zram0".into()])).fast);
        // Unknown counts as active.
        assert!(!MemoryReset::Auto.choose(&Err("no /proc".into())).fast);
        assert!(!MemoryReset::Full.choose(&Ok(vec![])).fast);
        assert!(MemoryReset::FastEvenWithSwap.choose(&Ok(vec!["/swapfile".into()])).fast);
    }
}
