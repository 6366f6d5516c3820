//! The deterministic WASI 0.2 a guest gets, with nothing granted: no preopened directory, no environment, no
//! arguments, sockets and name lookup denied, outgoing HTTP refused, stdin closed, stdout and stderr captured
//! under a cap, virtual clocks and seeded RNGs. Components importing any 0.2.x version link against it.
//!
//! One file per capability: `clocks`, `random`, `stdio`, `http`, and `ambient` (the ways out of the sandbox,
//! replaced by functions that record the attempt and refuse it).

mod ambient;
mod clocks;
mod http;
mod random;
mod stdio;

pub(crate) use clocks::VirtualClock;
pub(crate) use stdio::Capture;

use crate::call::State;
use wasmtime::Engine;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The WASI version the host's interfaces are registered at; components importing any 0.2.x match it.
pub(crate) const WASI: &str = "0.2.12";
/// Refused attempts kept per call.
pub(crate) const MAX_ATTEMPTS: usize = 64;

/// The linker every component is instantiated against: WASI p2 and `wasi:http` (our own, refusing) with nothing granted, the
/// converge interfaces, and the shadowed functions (virtual sleeps, recorded refusals).
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    http::add_to_linker(&mut linker)?;
    crate::bindings::agent::ConvergeAgent::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
        &mut linker,
        |s| s,
    )?;
    linker.allow_shadowing(true);
    clocks::shadow_sleeps(&mut linker)?;
    ambient::shadow(&mut linker)?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// The WASI context of one call: captured stdio, the call's virtual clock, RNGs seeded from `seed`, no network.
pub(crate) fn context(seed: &[u8; 32], clock: &VirtualClock, stdout: &Capture, stderr: &Capture) -> WasiCtx {
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout.clone())
        .stderr(stderr.clone())
        .wall_clock(clock.clone())
        .monotonic_clock(clock.clone())
        .secure_random(random::SeededRng::new(seed, 0))
        .insecure_random(random::SeededRng::new(seed, 1))
        .insecure_random_seed(u128::from_le_bytes(random::half(seed)))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    wasi.build()
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A pollable that is always ready: what a sleep becomes under the virtual clock.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

fn ready(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let r = table.push(Ready)?;
    wasmtime_wasi::p2::subscribe(table, r)
}
