//! converge-host: where the engine meets the outside world.
//!
//! - [`sandbox`]: one wasmtime engine, a fresh store per call under fuel, memory, deadline and hostcall
//!   limits, deterministic WASI with nothing granted.
//! - [`registry`]: the agents directory, checked file by file, compiled through the on-disk [`cache`].
//! - [`runner`]: loaded components as the engine's `Agent` and `Invariant`, and a runner for one job.
//! - the `converge` binary (`src/main.rs`): `run` and `agents`.

pub mod bindings;
pub mod cache;
pub mod error;
pub mod registry;
pub mod runner;
pub mod sandbox;

pub use converge_engine as engine;
pub(crate) use converge_engine::hex;
pub use error::HostError;
pub use registry::{Catalog, Kind, Loaded, Registry, Rejection};
pub use runner::{job_seed, roster, run_job};
pub use sandbox::{Limits, Sandbox, SandboxConfig};
