//! The [`Sandbox`]: one wasmtime engine configured for agents, its linker, and the epoch ticker that gives
//! every call its wall-clock backstop.

use crate::call::State;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
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

/// Sizing of the sandbox.
#[derive(Debug, Clone, Copy)]
pub struct SandboxConfig {
    /// Instances that may exist at once (pooling slots): every thread that runs guest calls may hold an
    /// agent's instance and, nested, a tool's.
    pub instances: u32,
    /// Use the pooling allocator (fast instantiation); off, every instance maps its own memory.
    pub pooling: bool,
}

impl SandboxConfig {
    /// Enough pooling slots for `threads` threads that run guest calls at once (at least 32).
    pub fn for_threads(threads: usize) -> Self {
        Self { instances: u32::try_from(threads.saturating_mul(4)).unwrap_or(u32::MAX).max(32), pooling: true }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { instances: 64, pooling: true }
    }
}

/// One wasmtime engine with its linker and epoch ticker. Share it behind an `Arc`.
pub struct Sandbox {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<State>,
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
        let engine = Engine::new(&engine_config(config)).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let linker = crate::wasi::linker(&engine).map_err(|e| SandboxError::Linker(format!("{e:#}")))?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Self { engine, linker, ticker: Some(ticker) })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop();
        }
    }
}

fn engine_config(sandbox: SandboxConfig) -> Config {
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
            .pagemap_scan(Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// Increments the engine's epoch every [`TICK`] until stopped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: Engine) -> Result<Self, SandboxError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("converge-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
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
