//! The service over real stores and a fake runtime of native agents: every rule of the service, with no
//! WebAssembly built. One module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

/// Native agents behind the runtime port.
mod fake;

/// One process over its own SQLite store.
mod local;

/// Several replicas over one PostgreSQL.
mod replicas;
