//! The sandbox: one wasmtime [`Engine`], one [`Linker`], and a fresh [`Store`] per call.
//!
//! Every call runs under four limits, each enforced here and each reported by type, never by matching a
//! message: **fuel** (`Trap::OutOfFuel`), **memory** counted over every memory of the component (the
//! [`Limiter`] records the refused grow, because a guest's allocation failure surfaces as `unreachable`),
//! a **wall-clock backstop** (an epoch deadline, `Trap::Interrupt`), and **hostcall fuel** (host functions
//! charge for the bytes they hand out, so a guest cannot make the host do unbounded work for free).
//!
//! The guest sees WASI 0.2 with nothing granted: no preopened directory, no environment, no arguments, sockets
//! and name lookup denied, outgoing HTTP refused, stdin closed, stdout and stderr captured under a cap. Its
//! clocks are virtual (they start at a fixed instant and advance 1 µs per reading; sleeping advances them at
//! once instead of blocking a host thread) and its RNGs are seeded from (job, agent, cycle). So two runs of
//! the same job see the same time and the same random numbers.

use crate::bindings::{context, log, tools, types};
use crate::error::HostError;
use crate::tools::ToolSession;
use bytes::Bytes;
use converge_engine::{Budget, Failure, FailureKind, ToolCall, ToolOutcome, View};
use rand_core::TryRng;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// How often the epoch ticks; call deadlines are counted in ticks.
pub const TICK: Duration = Duration::from_millis(1);
/// Fuel a host function charges per call, on top of one unit per byte it returns or receives.
pub const HOSTCALL_BASE: u64 = 100;
/// Captured output per call (log lines plus stdout and stderr), in bytes; the rest is counted, not kept.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// Log lines kept per call.
const MAX_LOG_LINES: usize = 256;
/// Refused attempts kept per call.
const MAX_ATTEMPTS: usize = 64;
/// Longest log line kept, in bytes.
const MAX_LINE: usize = 1024;
/// Most table elements one table may hold.
const TABLE_ELEMENTS: usize = 100_000;
/// Largest memory a job may ask for (`budget.memory_mb` is at most 4096).
const MAX_MEMORY: u64 = 4096 * 1024 * 1024;
/// The virtual wall clock starts here: 2024-01-01T00:00:00Z.
const WALL_START: Duration = Duration::from_hours(473_352);
/// Each clock reading advances the virtual clocks by this much.
const CLOCK_STEP_NS: u64 = 1_000;

/// The per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel for the call; host functions draw on a separate allowance of the same size.
    pub fuel: u64,
    /// Bytes of linear memory, all memories of the component together.
    pub memory_bytes: u64,
    /// Wall-clock backstop.
    pub timeout: Duration,
}

impl Limits {
    /// The per-call limits of a job's budget.
    pub fn from_budget(budget: &Budget) -> Self {
        Self {
            fuel: budget.fuel_per_call,
            memory_bytes: u64::from(budget.memory_mb) * 1024 * 1024,
            timeout: Duration::from_millis(budget.call_timeout_ms),
        }
    }

    /// The limits of the `info()` call made once at load: the default budget's.
    pub fn load() -> Self {
        Self::from_budget(&Budget::default())
    }
}

/// What one call gets besides its limits.
#[derive(Debug, Default)]
pub struct CallSetup {
    /// Seeds the guest's RNGs; derive it with [`call_seed`].
    pub seed: [u8; 32],
    /// What `tools.invoke` may reach (agents only); without it every invocation is `denied`.
    pub tools: Option<ToolSession>,
}

/// What a call produced and used.
#[derive(Debug)]
pub struct CallOutcome<R> {
    /// The guest's answer, or the failure that ended the call.
    pub result: Result<R, Failure>,
    /// Fuel used, wasm and host functions together.
    pub fuel: u64,
    /// Peak bytes of linear memory.
    pub memory: u64,
    /// Log lines, then stdout and stderr, capped.
    pub logs: Vec<String>,
    /// Wall time of the call (not deterministic; for stats and events only).
    pub elapsed: Duration,
    /// What the guest tried and the sandbox refused: opening a path, creating a socket, looking up a name,
    /// reading the environment, an outgoing HTTP request. In the order tried, capped.
    pub attempts: Vec<String>,
    /// The tools the call invoked, in order.
    pub tools: Vec<ToolCall>,
}

/// Sizing of the sandbox.
#[derive(Debug, Clone, Copy)]
pub struct SandboxConfig {
    /// Instances that may exist at once (pooling slots). At least the number of threads calling.
    pub instances: u32,
    /// Use the pooling allocator (fast instantiation); off, every instance maps its own memory.
    pub pooling: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { instances: 64, pooling: true }
    }
}

/// One wasmtime engine with its linker and epoch ticker. Share it behind an `Arc`.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
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
    /// The engine or the linker could not be built (for example, no virtual memory for the pool).
    pub fn new(config: SandboxConfig) -> Result<Self, HostError> {
        let engine = Engine::new(&engine_config(config)).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let linker = linker(&engine).map_err(|e| HostError::Engine(format!("linking WASI: {e:#}")))?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Self { engine, linker, ticker: Some(ticker) })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker every component is instantiated against.
    pub fn linker(&self) -> &Linker<State> {
        &self.linker
    }

    /// Run `f` in a fresh store under `limits`. `f` instantiates and calls; a failure is classified by what the
    /// store recorded (refused grow, hostcall fuel) and by trap code.
    pub fn call<R>(
        &self,
        limits: &Limits,
        setup: CallSetup,
        f: impl FnOnce(&mut Store<State>) -> wasmtime::Result<R>,
    ) -> CallOutcome<R> {
        let start = Instant::now();
        let (state, stdout, stderr) = State::new(limits, setup);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = u64::try_from(limits.timeout.as_millis() / TICK.as_millis()).unwrap_or(u64::MAX).max(1);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let result = match store.set_fuel(limits.fuel) {
            Ok(()) => f(&mut store),
            Err(e) => Err(e),
        };
        let wasm_fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let state = store.data_mut();
        let result = result.map_err(|e| state.classify(&e, limits));
        let fuel = wasm_fuel.saturating_add(state.meter.used);
        let memory = state.limiter.peak;
        let mut logs = std::mem::take(&mut state.logs);
        logs.capture("stdout", &stdout);
        logs.capture("stderr", &stderr);
        let mut attempts = std::mem::take(&mut state.attempts);
        attempts.extend(std::mem::take(&mut state.hooks.0));
        attempts.truncate(MAX_ATTEMPTS);
        let tools = state.tools.take().map(ToolSession::finish).unwrap_or_default();
        drop(store);
        CallOutcome { result, fuel, memory, logs: logs.finish(), elapsed: start.elapsed(), attempts, tools }
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

fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
    crate::bindings::agent::ConvergeAgent::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
        &mut linker,
        |s| s,
    )?;
    // Sleeping advances the virtual clock at once: a real sleep (or a pollable that never fires) would block a
    // host thread where the epoch deadline cannot reach it.
    linker.allow_shadowing(true);
    let mut clocks = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI}"))?;
    clocks.func_wrap("subscribe-duration", |mut cx: wasmtime::StoreContextMut<'_, State>, (d,): (u64,)| {
        let state = cx.data_mut();
        state.clock.advance(d);
        Ok((ready(&mut state.table)?,))
    })?;
    clocks.func_wrap("subscribe-instant", |mut cx: wasmtime::StoreContextMut<'_, State>, (when,): (u64,)| {
        let state = cx.data_mut();
        state.clock.advance_to(when);
        Ok((ready(&mut state.table)?,))
    })?;
    shadow_ambient(&mut linker)?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// The ways out of the sandbox (files, environment, sockets, name lookup), each replaced by a function that
/// records the attempt and refuses it. WASI served with nothing granted would refuse them too, but silently;
/// tool validation lists what a tool tried (SPEC §6).
fn shadow_ambient(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, IpAddressFamily};
    type Cx<'a> = wasmtime::StoreContextMut<'a, State>;
    let family = |f: IpAddressFamily| match f {
        IpAddressFamily::Ipv4 => "IPv4",
        IpAddressFamily::Ipv6 => "IPv6",
    };
    linker.instance(&format!("wasi:filesystem/preopens@{WASI}"))?.func_wrap(
        "get-directories",
        |mut cx: Cx<'_>, (): ()| {
            cx.data_mut().attempt("filesystem: asked for the preopened directories (none are granted)".into());
            Ok((Vec::<(Resource<wasmtime_wasi::filesystem::Descriptor>, String)>::new(),))
        },
    )?;
    linker.instance(&format!("wasi:cli/environment@{WASI}"))?.func_wrap(
        "get-environment",
        |mut cx: Cx<'_>, (): ()| {
            cx.data_mut().attempt("environment: read the environment variables (none are granted)".into());
            Ok((Vec::<(String, String)>::new(),))
        },
    )?;
    linker.instance(&format!("wasi:sockets/tcp-create-socket@{WASI}"))?.func_wrap(
        "create-tcp-socket",
        move |mut cx: Cx<'_>, (f,): (IpAddressFamily,)| {
            cx.data_mut().attempt(format!("sockets: tried to create a TCP socket ({}); denied", family(f)));
            Ok((Err::<Resource<wasmtime_wasi::p2::TcpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    linker.instance(&format!("wasi:sockets/udp-create-socket@{WASI}"))?.func_wrap(
        "create-udp-socket",
        move |mut cx: Cx<'_>, (f,): (IpAddressFamily,)| {
            cx.data_mut().attempt(format!("sockets: tried to create a UDP socket ({}); denied", family(f)));
            Ok((Err::<Resource<wasmtime_wasi::p2::UdpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    // Name lookup, with a stream type of its own: no stream is ever created.
    let mut lookup = linker.instance(&format!("wasi:sockets/ip-name-lookup@{WASI}"))?;
    lookup.resource("resolve-address-stream", wasmtime::component::ResourceType::host::<NoStream>(), |_, _| Ok(()))?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut cx: Cx<'_>, (_network, name): (Resource<wasmtime_wasi::p2::Network>, String)| {
            cx.data_mut().attempt(format!("sockets: tried to look up the name {}; denied", clip(&name, 253)));
            Ok((Err::<Resource<NoStream>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |_cx: Cx<'_>, (_stream,): (Resource<NoStream>,)| Ok((Err::<Option<IpAddress>, _>(ErrorCode::InvalidState),)),
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut cx: Cx<'_>, (_stream,): (Resource<NoStream>,)| Ok((ready(&mut cx.data_mut().table)?,)),
    )?;
    Ok(())
}

/// The WASI version the host's interfaces are registered at; components importing any 0.2.x match it.
const WASI: &str = "0.2.12";

/// The name-lookup stream of the shadowed `ip-name-lookup`; never created.
struct NoStream;

fn ready(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let r = table.push(Ready)?;
    wasmtime_wasi::p2::subscribe(table, r)
}

/// A pollable that is always ready: what a sleep becomes under the virtual clock.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

/// Increments the engine's epoch every [`TICK`] until stopped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: Engine) -> Result<Self, HostError> {
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
            .map_err(|e| HostError::Engine(format!("starting the epoch thread: {e}")))?;
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread only sleeps and increments; if it panicked there is nothing to recover.
        let _ = self.thread.join();
    }
}

/// The seed of one call's RNGs: SHA-256 over the job's seed, the agent's name and the cycle.
pub fn call_seed(job: &[u8; 32], name: &str, cycle: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"converge-call-v1\0");
    h.update(job);
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(cycle.to_le_bytes());
    h.finalize().into()
}

/// The store's data: WASI, the resource table, the limiter and the call's records.
pub struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyHttp,
    limiter: Limiter,
    meter: Meter,
    logs: Logs,
    tools: Option<ToolSession>,
    attempts: Vec<String>,
    clock: VirtualClock,
}

impl State {
    fn new(limits: &Limits, setup: CallSetup) -> (Self, Capture, Capture) {
        let clock = VirtualClock::default();
        let (stdout, stderr) = (Capture::default(), Capture::default());
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone())
            .secure_random(SeededRng::new(&setup.seed, 0))
            .insecure_random(SeededRng::new(&setup.seed, 1))
            .insecure_random_seed(u128::from_le_bytes(split(&setup.seed)))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let state = Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: DenyHttp::default(),
            limiter: Limiter::new(limits.memory_bytes),
            meter: Meter::new(limits.fuel),
            logs: Logs::default(),
            tools: setup.tools,
            attempts: Vec::new(),
            clock,
        };
        (state, stdout, stderr)
    }

    /// Why a call failed, from the records first (they are exact), then from the trap code.
    fn classify(&self, error: &wasmtime::Error, limits: &Limits) -> Failure {
        if let Some(why) = &self.limiter.refused {
            return Failure::new(FailureKind::OutOfMemory, why.clone());
        }
        if self.meter.exhausted {
            return Failure::new(
                FailureKind::OutOfFuel,
                format!("host calls used all {} units of hostcall fuel", self.meter.limit),
            );
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                Failure::new(FailureKind::OutOfFuel, format!("the call used all {} units of fuel", limits.fuel))
            }
            Some(Trap::Interrupt) => Failure::new(
                FailureKind::Deadline,
                format!("the call ran past call_timeout_ms ({} ms)", limits.timeout.as_millis()),
            ),
            Some(trap) => Failure::trap(format!("the guest trapped: {trap}")),
            None => Failure::trap(format!("the call failed: {}", first_line(&format!("{error}")))),
        }
    }

    /// Put `value` in the call's resource table, to hand it to the guest.
    ///
    /// # Errors
    /// The table is full.
    pub fn table_push<T: Send + 'static>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        Ok(self.table.push(value)?)
    }

    fn attempt(&mut self, what: String) {
        if self.attempts.len() < MAX_ATTEMPTS {
            self.attempts.push(what);
        }
    }

    fn charge(&mut self, units: usize) -> wasmtime::Result<()> {
        self.meter.charge(HOSTCALL_BASE.saturating_add(units as u64))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn split(seed: &[u8; 32]) -> [u8; 16] {
    let mut half = [0; 16];
    half.copy_from_slice(&seed[..16]);
    half
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Refuses every outgoing HTTP request, and records it.
#[derive(Default)]
struct DenyHttp(Vec<String>);

type HttpResponse = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = HttpResponse> + Send> {
        if self.0.len() < MAX_ATTEMPTS {
            let uri = request.uri().to_string();
            self.0.push(format!("http: tried {} {}; denied", request.method(), clip(&uri, 256)));
        }
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// Counts memory over every memory of the instance and records the first refused grow.
struct Limiter {
    cap: u64,
    total: u64,
    peak: u64,
    refused: Option<String>,
}

impl Limiter {
    fn new(cap: u64) -> Self {
        Self { cap, total: 0, peak: 0, refused: None }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let next = self.total.saturating_sub(current as u64).saturating_add(desired as u64);
        if next > self.cap {
            self.refused.get_or_insert_with(|| {
                format!("memory would grow to {} bytes, over the limit of {} bytes (budget.memory_mb)", next, self.cap)
            });
            return Ok(false);
        }
        self.total = next;
        self.peak = self.peak.max(next);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > TABLE_ELEMENTS {
            self.refused
                .get_or_insert_with(|| format!("a table would grow to {desired} elements, over {TABLE_ELEMENTS}"));
            return Ok(false);
        }
        Ok(true)
    }
}

/// The hostcall fuel of one call.
struct Meter {
    limit: u64,
    used: u64,
    exhausted: bool,
}

/// Raised by a host function when the call's hostcall fuel is spent; the trap ends the call.
#[derive(Debug, thiserror::Error)]
#[error("hostcall fuel exhausted")]
struct HostcallFuelExhausted;

impl Meter {
    fn new(limit: u64) -> Self {
        Self { limit, used: 0, exhausted: false }
    }

    fn charge(&mut self, units: u64) -> wasmtime::Result<()> {
        let used = self.used.saturating_add(units);
        if used > self.limit {
            self.used = self.limit;
            self.exhausted = true;
            return Err(wasmtime::Error::new(HostcallFuelExhausted));
        }
        self.used = used;
        Ok(())
    }
}

/// Log lines of one call, capped.
#[derive(Default)]
struct Logs {
    lines: Vec<String>,
    bytes: usize,
    dropped: u64,
}

impl Logs {
    fn push(&mut self, line: String) {
        if self.lines.len() >= MAX_LOG_LINES || self.bytes + line.len() > OUTPUT_CAP {
            self.dropped += 1;
            return;
        }
        self.bytes += line.len();
        self.lines.push(line);
    }

    fn capture(&mut self, stream: &str, capture: &Capture) {
        let (bytes, lost) = capture.take();
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            self.push(format!("{stream}: {}", clip(line, MAX_LINE)));
        }
        if lost > 0 {
            self.push(format!("{stream}: {lost} more bytes not kept (cap {OUTPUT_CAP} bytes)"));
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            let n = self.dropped;
            self.lines.push(format!("{n} more lines not kept (cap {MAX_LOG_LINES} lines, {OUTPUT_CAP} bytes)"));
        }
        self.lines
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// stdout or stderr of one call: kept up to [`OUTPUT_CAP`] bytes, the rest counted and dropped (never a trap:
/// a chatty guest is not a failing one).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    lost: u64,
}

impl Capture {
    fn write(&self, data: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = OUTPUT_CAP.saturating_sub(c.bytes.len());
        let keep = data.len().min(room);
        c.bytes.extend_from_slice(&data[..keep]);
        c.lost += (data.len() - keep) as u64;
    }

    fn take(&self) -> (Vec<u8>, u64) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut c.bytes), std::mem::take(&mut c.lost))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        Capture::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Capture::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The guest's clocks: nanoseconds since the call began, advanced by every reading and by every sleep.
#[derive(Clone, Default)]
struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    fn tick(&self) -> u64 {
        self.0.fetch_add(CLOCK_STEP_NS, Ordering::Relaxed).saturating_add(CLOCK_STEP_NS)
    }

    fn advance(&self, ns: u64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(t.saturating_add(ns)));
    }

    fn advance_to(&self, when: u64) {
        self.0.fetch_max(when, Ordering::Relaxed);
    }
}

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        CLOCK_STEP_NS
    }

    fn now(&self) -> u64 {
        self.tick()
    }
}

impl HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(CLOCK_STEP_NS)
    }

    fn now(&self) -> Duration {
        WALL_START.saturating_add(Duration::from_nanos(self.tick()))
    }
}

/// xoshiro256** seeded from a call seed and a stream number: the guest's "random" numbers, the same every run.
struct SeededRng([u64; 4]);

impl SeededRng {
    fn new(seed: &[u8; 32], stream: u8) -> Self {
        let mut h = Sha256::new();
        h.update(seed);
        h.update([stream]);
        let bytes: [u8; 32] = h.finalize().into();
        let mut s = [0u64; 4];
        for (word, chunk) in s.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Self(s)
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// The `view` resource: the engine's frozen snapshot of the cycle (an `Arc`, never a copy of the context).
pub struct ViewHandle(pub View);

impl types::Host for State {}

impl context::Host for State {}

fn to_wit(f: &converge_engine::FactRef<'_>) -> types::Fact {
    types::Fact { key: f.key.to_owned(), id: f.id.to_owned(), content: f.content.to_owned() }
}

fn size(f: &converge_engine::FactRef<'_>) -> usize {
    f.key.len() + f.id.len() + f.content.len()
}

impl context::HostView for State {
    fn cycle(&mut self, v: Resource<ViewHandle>) -> wasmtime::Result<u32> {
        self.charge(0)?;
        Ok(self.table.get(&v)?.0.cycle())
    }

    fn goal(&mut self, v: Resource<ViewHandle>) -> wasmtime::Result<String> {
        let view = self.table.get(&v)?.0.clone();
        self.charge(view.goal().len())?;
        Ok(view.goal().to_owned())
    }

    fn get(&mut self, v: Resource<ViewHandle>, key: String, id: String) -> wasmtime::Result<Option<types::Fact>> {
        let view = self.table.get(&v)?.0.clone();
        let found = view.get(&key, &id);
        self.charge(key.len() + id.len() + found.as_ref().map_or(0, size))?;
        Ok(found.as_ref().map(to_wit))
    }

    fn facts(&mut self, v: Resource<ViewHandle>, key: String) -> wasmtime::Result<Vec<types::Fact>> {
        let view = self.table.get(&v)?.0.clone();
        // Charge before copying, so a guest cannot make the host build what it cannot pay for.
        self.charge(key.len() + view.facts(&key).map(|f| size(&f)).sum::<usize>())?;
        Ok(view.facts(&key).map(|f| to_wit(&f)).collect())
    }

    fn added(&mut self, v: Resource<ViewHandle>, key: String) -> wasmtime::Result<Vec<types::Fact>> {
        let view = self.table.get(&v)?.0.clone();
        self.charge(key.len() + view.added(&key).map(|f| size(&f)).sum::<usize>())?;
        Ok(view.added(&key).map(|f| to_wit(&f)).collect())
    }

    fn count(&mut self, v: Resource<ViewHandle>, key: String) -> wasmtime::Result<u32> {
        self.charge(key.len())?;
        Ok(u32::try_from(self.table.get(&v)?.0.count(&key)).unwrap_or(u32::MAX))
    }

    fn keys(&mut self, v: Resource<ViewHandle>) -> wasmtime::Result<Vec<String>> {
        let view = self.table.get(&v)?.0.clone();
        self.charge(view.keys().map(str::len).sum())?;
        Ok(view.keys().map(str::to_owned).collect())
    }

    fn drop(&mut self, v: Resource<ViewHandle>) -> wasmtime::Result<()> {
        self.table.delete(v)?;
        Ok(())
    }
}

impl tools::Host for State {
    fn invoke(&mut self, name: String, input: String) -> wasmtime::Result<Result<String, types::ToolError>> {
        self.charge(name.len() + input.len())?;
        let shown = clip(&name, 128).to_owned();
        let result = match self.tools.as_mut() {
            Some(session) => session.invoke(&name, &input),
            None => Err((ToolOutcome::Denied, format!("tool {shown} is not in this agent's declared tools"))),
        };
        match result {
            Ok(output) => {
                self.charge(output.len())?;
                self.logs.push(format!("tool {shown}: ok"));
                Ok(Ok(output))
            }
            Err((outcome, message)) => {
                self.charge(message.len())?;
                let kind = match outcome {
                    ToolOutcome::Denied => "denied",
                    ToolOutcome::Unknown => "unknown",
                    ToolOutcome::Unavailable => "unavailable",
                    ToolOutcome::Failed | ToolOutcome::Ok => "failed",
                };
                self.logs.push(format!("tool {shown}: {kind}: {}", clip(&message, MAX_LINE)));
                Ok(Err(match outcome {
                    ToolOutcome::Denied => types::ToolError::Denied(message),
                    ToolOutcome::Unknown => types::ToolError::Unknown(message),
                    ToolOutcome::Unavailable => types::ToolError::Unavailable(message),
                    ToolOutcome::Failed | ToolOutcome::Ok => types::ToolError::Failed(message),
                }))
            }
        }
    }
}

impl log::Host for State {
    fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        self.charge(message.len())?;
        let level = match level {
            types::Level::Trace => "trace",
            types::Level::Debug => "debug",
            types::Level::Info => "info",
            types::Level::Warn => "warn",
            types::Level::Error => "error",
        };
        self.logs.push(format!("{level}: {}", clip(&message, MAX_LINE)));
        Ok(())
    }
}
