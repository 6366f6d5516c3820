//! converge-runtime: components as Converge runs them — inspected, loaded from the agents and tools
//! directories, bound to a job, calling tools, and untrusted tools validated before anyone may call them.
//!
//! - `inspect`: what a file must be (a component of one `converge:agent` world, importing only what its world
//!   may) before anything else happens to it.
//! - [`Registry`]: the agents directory and the trusted tools directory, rescanned on demand, and the
//!   validated tools; its [`Catalog`] holds what is loaded now.
//! - [`roster`]: loaded components as the engine's `Agent` and `Invariant`, bound to a job's limits and seed.
//! - [`tools`]: the tool set, the per-call session and circuits, and the validation pipeline.
//! - [`WasmRuntime`]: all of that behind the service's `Runtime` port.
//! - [`replay`]: a stored job run again and compared with its trail.
//!
//! Jobs run through the engine's one driver (`converge_engine::drive`), whoever runs them.
//!
//! # Invariants of this crate
//!
//! - A file is hostile until checked; a bad file is a rejection with its name and reason, never an error that
//!   stops the others.
//! - Nothing submitted is ever deserialized: submitted bytes are compiled by the one sandbox.
//! - A job's agents reach only the trusted tools and their tenant's validated ones.

pub mod inspect;
mod registry;
pub mod replay;
mod roster;
pub mod tools;
mod wasm;

pub use inspect::{Kind, MAX_COMPONENT_BYTES, import_allowed};
pub use registry::{Catalog, Loaded, Loadout, Registry};
pub use roster::{job_seed, roster, roster_with_tools};
pub use wasm::WasmRuntime;
