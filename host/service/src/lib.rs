//! converge-service: what every front end calls — `submit`, `answer`, `cancel`, `review`, `validate` and the
//! reads — over a [`Store`](converge_store::Store) and a [`Runtime`].
//!
//! Admission (ids, the canonical spec, a place in the bounded queue, the commit, the push), the worker threads
//! that run jobs through the engine's one driver, resume at start, live events and metrics all live here, so
//! the HTTP layer, the web page's server side, tests or a future gRPC front end get the same rules and bounds.
//!
//! # Invariants of this crate
//!
//! - A submission is answered only after its job is committed; a full queue is refused before anything is
//!   written, and a committed job always has a place in the queue. A submission that waits for its result is
//!   committed with its whole run, at its stop, before the answer (`unstored`).
//! - The async runtime never runs a job or blocks on one: workers are OS threads; store reads run on the
//!   blocking pool.
//! - Nothing here knows wasmtime or HTTP: components come through the [`Runtime`] port, requests from whoever
//!   calls.

mod admission;
mod deadline;
mod error;
mod executor;
mod metrics;
mod queue;
mod reads;
mod runtime;
mod service;
mod status;
mod tools;
mod unstored;
mod watch;
mod worker;

pub use admission::{MAX_IDEMPOTENCY_KEY, Submitted, check_idempotency_key, trace_parent};
pub use deadline::Deadline;
pub use error::ServiceError;
pub use executor::AdaptiveExecutor;
pub use metrics::{Metrics, Observer};
pub use queue::{JobQueue, Permit};
pub use runtime::{
    AgentEntry, Component, InvariantEntry, Inventory, Rejection, Roster, Runtime, RuntimeError, TrustedTool,
};
pub use service::{Service, ServiceConfig, SetParent, SpanParent, now_ms};
pub use status::{Ready, SlowAgent, StatusReport};
pub use tools::{MAX_COMMENT, MAX_REVIEWER, ToolDetail, ToolListing, Validation, ValidationTicket, check_tool_id};
pub use watch::{Published, Watchers};
pub use worker::placeholder;

/// The tenant of every request and job when nobody authenticates (a server without a token file, `converge
/// run`).
pub const DEFAULT_TENANT: &str = "default";
