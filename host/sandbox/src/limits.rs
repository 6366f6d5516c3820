//! The per-call limits and their enforcement: [`Limits`] as a job's budget sets them, the memory limiter (every
//! memory of the component counted together, the refused grow recorded, because a guest's allocation failure
//! surfaces as `unreachable`), and the hostcall meter (host functions charge for the bytes they hand out, so a
//! guest cannot make the host do unbounded work for free).

use crate::engine::TABLE_ELEMENTS;
use converge_engine::Budget;
use std::time::Duration;

/// Fuel a host function charges per call, on top of one unit per byte it returns or receives.
pub const HOSTCALL_BASE: u64 = 100;

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

pub(crate) struct Limiter {
    pub(crate) cap: u64,
    pub(crate) total: u64,
    pub(crate) peak: u64,
    pub(crate) refused: Option<String>,
}

impl Limiter {
    pub(crate) fn new(cap: u64) -> Self {
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
pub(crate) struct Meter {
    pub(crate) limit: u64,
    pub(crate) used: u64,
    pub(crate) exhausted: bool,
}

/// Raised by a host function when the call's hostcall fuel is spent; the trap ends the call.
#[derive(Debug, thiserror::Error)]
#[error("hostcall fuel exhausted")]
pub(crate) struct HostcallFuelExhausted;

impl Meter {
    pub(crate) fn new(limit: u64) -> Self {
        Self { limit, used: 0, exhausted: false }
    }

    pub(crate) fn charge(&mut self, units: u64) -> wasmtime::Result<()> {
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
