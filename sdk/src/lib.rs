//! converge-sdk: what a Converge agent author depends on.
//!
//! An agent is a WebAssembly component built for `wasm32-wasip2` that reads the frozen context of a cycle and
//! returns an [`Effect`]: facts to add, [`Proposal`]s with a confidence, [`Question`]s for a human. Implement
//! [`Agent`] and export it with [`export_agent!`]; an invariant implements [`Invariant`] ([`export_invariant!`]),
//! a tool implements [`Tool`] ([`export_tool!`]). Each macro exports its own world of `converge:agent@0.1.0`.
//!
//! ```
//! use converge_sdk::{Agent, AgentInfo, Deserialize, Effect, View};
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "converge_sdk::serde")]
//! struct Signal { segment: String, strength: f64 }
//!
//! /// Marks every segment with a strong signal as hot.
//! struct HotSegments;
//!
//! impl Agent for HotSegments {
//!     fn info() -> AgentInfo {
//!         AgentInfo::new("hot-segments", "Marks segments with a strong signal.").reads(["signals"]).writes(["hot"])
//!     }
//!
//!     fn execute(ctx: &View) -> Result<Effect, String> {
//!         let mut effect = Effect::new();
//!         for (id, s) in ctx.facts_json::<Signal>("signals")? {
//!             if s.strength >= 0.7 {
//!                 effect = effect.fact("hot", s.segment, id);
//!             }
//!         }
//!         Ok(effect)
//!     }
//! }
//!
//! converge_sdk::export_agent!(HotSegments);
//! ```
//!
//! Build it as a library with `crate-type = ["cdylib"]` and `cargo build --release --target wasm32-wasip2`,
//! then drop the `.wasm` file into the agents directory.
//!
//! # How a cycle sees an agent
//!
//! In cycle 1 every agent runs; after that an agent runs only when a key in its `reads` received a fact in the
//! previous cycle ([`View::added`] returns those facts). All agents of a cycle see the same snapshot, and an
//! effect is applied whole or not at all. Facts are never changed: returning a fact that is already there with
//! the same content does nothing, with other content it is a conflict that ends the job. So compute each fact
//! from what it is about, and write a summary once (check with [`View::get`] whether it exists).
//!
//! # Determinism
//!
//! A job must give the same facts every time it runs. The host already gives guests a deterministic clock and
//! RNG, but say it in the code too: iterate over a [`BTreeMap`](std::collections::BTreeMap) (or a sorted `Vec`),
//! never a `HashMap`, whose order is random per process; do not read clocks or use `rand`; break ties in
//! rankings by id. The JSON helpers serialise objects with sorted keys for the same reason.
//!
//! # Failing
//!
//! Return `Err(message)` to refuse: the effect is discarded and a diagnostic is recorded (or the job ends, if the
//! agent is `required`). Do not `unwrap` or panic: a panic traps, which the host reports as `trap` with less to
//! go on than your message.
//!
//! # Imports
//!
//! A component imports only what it calls. [`tools::invoke`] exists for agents: an invariant or a tool that
//! calls it imports `converge:agent/tools`, which is outside its world, and the host refuses to load it.

mod builders;
#[cfg(feature = "json")]
mod json;

pub mod bindings;
pub mod log;

pub use bindings::context::View;
pub use bindings::types::{
    AgentInfo, Effect, Fact, InvariantClass, InvariantInfo, Level, Proposal, Question, ToolError, ToolInfo,
};

/// What an agent implements: `info` (called once, at load) and `execute` (once per cycle it is eligible).
pub use bindings::agent::exports::converge::agent::agent::Guest as Agent;
/// What an invariant implements: `info` (called once, at load) and `check`.
pub use bindings::invariant::exports::converge::agent::invariant::Guest as Invariant;
/// What a tool implements: `info` (called once, at load) and `invoke`, a pure function of its input.
pub use bindings::tool::exports::converge::agent::tool::Guest as Tool;

#[cfg(feature = "json")]
pub use serde::{self, Deserialize, Serialize};
#[cfg(feature = "json")]
pub use serde_json::{self, json};

/// Calls to tools, for agents only: each call runs the tool in its own sandbox, through the host.
pub mod tools {
    pub use crate::bindings::tools::invoke;
}

/// Export `$ty`, which implements [`Agent`], as the component's `converge:agent/agent`.
///
/// Use it once per crate, at the top level. The component then has the world `converge-agent`.
#[macro_export]
macro_rules! export_agent {
    ($ty:ident) => {
        $crate::bindings::agent::export_agent!($ty with_types_in $crate::bindings::agent);
    };
}

/// Export `$ty`, which implements [`Invariant`], as the component's `converge:agent/invariant`.
///
/// ```
/// use converge_sdk::{Invariant, InvariantClass, InvariantInfo, View};
///
/// struct AtMostOneDecision;
///
/// impl Invariant for AtMostOneDecision {
///     fn info() -> InvariantInfo {
///         InvariantInfo::new("one-decision", "At most one final decision.", InvariantClass::Structural)
///     }
///
///     fn check(ctx: &View) -> Result<(), String> {
///         match ctx.count("decision/final") {
///             0 | 1 => Ok(()),
///             n => Err(format!("{n} final decisions")),
///         }
///     }
/// }
///
/// converge_sdk::export_invariant!(AtMostOneDecision);
/// ```
#[macro_export]
macro_rules! export_invariant {
    ($ty:ident) => {
        $crate::bindings::invariant::export_invariant!($ty with_types_in $crate::bindings::invariant);
    };
}

/// Export `$ty`, which implements [`Tool`], as the component's `converge:agent/tool`.
///
/// ```
/// use converge_sdk::{Tool, ToolInfo};
///
/// struct Upper;
///
/// impl Tool for Upper {
///     fn info() -> ToolInfo {
///         ToolInfo::new("upper", "Upper-cases its input.")
///     }
///
///     fn invoke(input: String) -> Result<String, String> {
///         Ok(input.to_uppercase())
///     }
/// }
///
/// converge_sdk::export_tool!(Upper);
/// ```
#[macro_export]
macro_rules! export_tool {
    ($ty:ident) => {
        $crate::bindings::tool::export_tool!($ty with_types_in $crate::bindings::tool);
    };
}
