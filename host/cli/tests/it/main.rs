//! The tests of the `converge` binary itself: one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

/// Fresh directories with the example agents, the shared cache, the examples and their hashes.
mod common;

/// `run`, `agents` and `validate-tool`: exit codes, stdout, stderr.
mod cli;

/// `serve` over a real socket: startup, refusals, slow clients, `kill -9` in the middle of work, overload.
mod serve;

/// Two replicas on one PostgreSQL through `kill -9`, `SIGSTOP` past the lease, and `SIGTERM`.
mod chaos;

/// The web page in Debian's chromium through playwright-core: live job, answer form, dropped connection.
mod ui;

/// OTLP/HTTP export of the spans to a fake collector in this process, `traceparent` across a restart.
mod traces;
