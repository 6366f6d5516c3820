//! converge-host: where the engine meets the outside world.
//!
//! - [`sandbox`]: one wasmtime engine, a fresh store per call under fuel, memory, deadline and hostcall
//!   limits, deterministic WASI with nothing granted.
//! - [`registry`]: the agents directory, checked file by file, compiled through the on-disk [`cache`].
//! - [`runner`]: loaded components as the engine's `Agent` and `Invariant`, and a runner for one job.
//! - [`store`]: the durable store (SQLite, WAL, group commit) behind one trait.
//! - [`tools`]: tools agents call (trusted directory, validated submissions), the circuit breaker, and the
//!   validation pipeline for untrusted tools.
//! - [`service`]: the job service (bounded queue, workers, live events, metrics) and its HTTP API.
//! - the `converge` binary (`src/main.rs`): `serve`, `run`, `replay` and `agents`.

pub mod bindings;
pub mod cache;
pub mod error;
pub mod registry;
pub mod runner;
pub mod sandbox;
pub mod service;
pub mod store;
pub mod tools;

pub use converge_engine as engine;
pub(crate) use converge_engine::hex;
pub use error::HostError;
pub use registry::{Catalog, Kind, Loaded, Registry, Rejection};
pub use runner::{job_seed, replay_job, roster, roster_with_tools, run_job};
pub use sandbox::{Limits, Sandbox, SandboxConfig};
