//! The guest's clocks: virtual, starting at 2024-01-01T00:00:00Z and advancing 1 µs per reading. Sleeping
//! advances them at once: a real sleep (or a pollable that never fires) would block a host thread where the
//! epoch deadline cannot reach it.

use super::{WASI, ready};
use crate::call::State;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// The virtual wall clock starts here: 2024-01-01T00:00:00Z.
const WALL_START: Duration = Duration::from_hours(473_352);
/// Each clock reading advances the virtual clocks by this much.
const CLOCK_STEP_NS: u64 = 1_000;

/// `subscribe-duration` and `subscribe-instant` replaced: they advance the virtual clock and are ready at once.
pub(super) fn shadow_sleeps(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
    Ok(())
}

#[derive(Clone, Default)]
pub(crate) struct VirtualClock(Arc<AtomicU64>);

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
