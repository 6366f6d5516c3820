//! converge-host: where the engine meets the outside world.
//!
//! This crate will hold the wasmtime sandbox, the agent registry, the store, the HTTP API and the `converge`
//! CLI (issues #3 to #5). Today it only re-exports the engine, so that nothing here pretends to run agents
//! before the sandbox exists.

pub use converge_engine as engine;
