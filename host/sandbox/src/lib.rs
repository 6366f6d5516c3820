//! converge-sandbox: the one place Converge runs untrusted WebAssembly.
//!
//! One wasmtime [`Sandbox`] per process (an `Engine`, a `Linker`, an epoch ticker); each component compiled
//! once ([`Sandbox::compile`], or through the on-disk [`Cache`]) and linked once ([`AgentPre`],
//! [`InvariantPre`], [`ToolPre`]); a fresh `Store` for every call, under four limits reported by type, never by
//! message: fuel, memory over every memory of the component, a wall-clock backstop and hostcall fuel.
//!
//! Each host capability is a file of its own, in the shape of wasmtime's `wasi-config` crate: `context` (the
//! frozen view of the cycle), `log`, `tools` (behind the [`ToolHost`] trait, so this crate knows nothing of how
//! tools resolve), and under `wasi/` the deterministic WASI a guest gets: virtual clocks, seeded randomness,
//! captured stdio, refused HTTP, and the ambient authority (files, environment, sockets, names) replaced by
//! functions that record the attempt and refuse it.
//!
//! # Invariants of this crate
//!
//! - A guest call ends with a value or a classified [`Failure`](converge_engine::Failure); nothing a guest
//!   does reaches a host panic, and no call blocks a host thread (sleeps advance the virtual clock).
//! - A guest sees no real time, randomness, environment, file or socket.
//! - Nothing is ever deserialized but the host's own [`Cache`] (the one `unsafe` block, in `cache.rs`).
//! - This crate knows nothing of jobs, stores, tenants or HTTP servers: it runs one call at a time.

mod bindings;
mod cache;
mod call;
mod context;
mod engine;
mod guest;
mod limits;
mod log;
mod tools;
mod wasi;

pub use cache::{Cache, CompileError};
pub use call::{CallOutcome, CallSetup, State, call_seed};
pub use engine::{
    GUEST_STACK, MemoryReset, ResetChoice, Sandbox, SandboxConfig, SandboxError, TICK, active_swaps, swap_on_host,
};
pub use guest::{AgentPre, InvariantPre, LinkError, ToolPre};
pub use limits::{HOSTCALL_BASE, Limits};
pub use log::OUTPUT_CAP;
pub use tools::ToolHost;
pub use wasmtime::component::Component;

pub use converge_engine::names::clip;

/// The first line of `s`: what a failure message keeps of a multi-line wasmtime error.
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
