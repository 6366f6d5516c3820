//! One call: a fresh `Store` whose data is the call's [`State`], the limits set on it, the guest run, and the
//! outcome collected — the result or a classified failure, fuel, peak memory, logs, refused attempts and the
//! tool invocations. A failure is classified from what the store recorded (a refused grow, spent hostcall fuel)
//! and then from the trap code, never from a message.

use crate::engine::{Sandbox, TICK};
use crate::limits::{HOSTCALL_BASE, Limiter, Limits, Meter};
use crate::log::Logs;
use crate::tools::ToolHost;
use crate::wasi::{Capture, MAX_ATTEMPTS, VirtualClock};
use converge_engine::{Failure, FailureKind, ToolCall};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtx;

/// What one call gets besides its limits.
#[derive(Default)]
pub struct CallSetup {
    /// Seeds the guest's RNGs; derive it with [`call_seed`].
    pub seed: [u8; 32],
    /// What `tools.invoke` may reach (agents only); without it every invocation is `denied`.
    pub tools: Option<Box<dyn ToolHost>>,
}

impl std::fmt::Debug for CallSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSetup").field("tools", &self.tools.is_some()).finish_non_exhaustive()
    }
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

impl<R> CallOutcome<R> {
    /// Wall time in whole microseconds.
    pub fn time_us(&self) -> u64 {
        u64::try_from(self.elapsed.as_micros()).unwrap_or(u64::MAX)
    }
}

impl Sandbox {
    /// Run `f` in a fresh store under `limits`. `f` instantiates and calls; a failure is classified by what the
    /// store recorded (refused grow, hostcall fuel) and by trap code.
    pub(crate) fn call<R>(
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
        let attempts = std::mem::take(&mut state.attempts);
        let tools = state.tools.take().map(ToolHost::finish).unwrap_or_default();
        drop(store);
        CallOutcome { result, fuel, memory, logs: logs.finish(), elapsed: start.elapsed(), attempts, tools }
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
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) limiter: Limiter,
    pub(crate) meter: Meter,
    pub(crate) logs: Logs,
    pub(crate) tools: Option<Box<dyn ToolHost>>,
    pub(crate) attempts: Vec<String>,
    pub(crate) clock: VirtualClock,
}

impl State {
    fn new(limits: &Limits, setup: CallSetup) -> (Self, Capture, Capture) {
        let clock = VirtualClock::default();
        let (stdout, stderr) = (Capture::default(), Capture::default());
        let state = Self {
            table: ResourceTable::new(),
            wasi: crate::wasi::context(&setup.seed, &clock, &stdout, &stderr),
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
            None => Failure::trap(format!("the call failed: {}", crate::first_line(&format!("{error}")))),
        }
    }

    /// Put `value` in the call's resource table, to hand it to the guest.
    pub(crate) fn table_push<T: Send + 'static>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        Ok(self.table.push(value)?)
    }

    /// Record something the guest tried and the sandbox refused.
    pub(crate) fn attempt(&mut self, what: String) {
        if self.attempts.len() < MAX_ATTEMPTS {
            self.attempts.push(what);
        }
    }

    /// Charge hostcall fuel for a host function handing out or taking in `units` bytes.
    pub(crate) fn charge(&mut self, units: usize) -> wasmtime::Result<()> {
        self.meter.charge(HOSTCALL_BASE.saturating_add(units as u64))
    }
}
