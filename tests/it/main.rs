//! The one integration-test binary of Converge; one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

/// Native scripted agents and invariants, shared by every engine test.
mod support;

/// One named test per SPEC §2 rule, 1 to 12.
mod rules;

/// proptest properties of the engine, each tied to a rule.
mod props;

/// Data-driven cases under `tests/cases/`, one folder each (`UPDATE_EXPECT=1` rewrites expectations).
mod cases;

/// Hostile and probe guest components through the real host: one test per limit.
mod sandbox;

/// The example agents and jobs through the real host: convergence, determinism, a human answer.
mod examples;

/// Tools: agents calling them through the host, and the validation pipeline on good and hostile tools.
mod tools;

/// The HTTP API in-process: the real router over a real service, store and runtime, driven with `oneshot`.
mod api;
