//! converge-engine: the deterministic core of Converge.
//!
//! A [`Job`] runs cycles over a context of facts: **select** the agents whose `reads` changed, **execute**
//! them in parallel against one frozen [`View`], **merge** their effects one at a time in agent-name order,
//! **check** invariants, and stop at a fixed point or when a budget runs out (SPEC §2).
//!
//! ```
//! use converge_engine::{Agent, AgentInfo, Effect, Execution, Fact, Job, JobSpec, NoInterrupt, SerialExecutor, Status, View};
//! use std::sync::Arc;
//!
//! struct Echo(AgentInfo);
//! impl Agent for Echo {
//!     fn info(&self) -> &AgentInfo { &self.0 }
//!     fn execute(&self, view: &View) -> Execution {
//!         let facts = view.added("in").map(|f| Fact::new("out", f.id, f.content)).collect();
//!         Effect { facts, ..Effect::default() }.into()
//!     }
//! }
//!
//! let echo = Echo(AgentInfo { name: "echo".into(), reads: vec!["in".into()], writes: vec!["out".into()], ..AgentInfo::default() });
//! let mut spec = JobSpec::new("copy");
//! spec.facts.push(Fact::new("in", "1", "hello"));
//! let mut job = Job::new(&spec, &[Arc::new(echo)], &[]).unwrap();
//! assert_eq!(job.run(&SerialExecutor, &NoInterrupt), Status::Converged);
//! assert_eq!(job.view().get("out", "1").unwrap().content, "hello");
//! ```
//!
//! # Invariants of this crate
//!
//! - No I/O, no clock, no randomness, no threads of its own: parallelism comes from the [`Executor`] it is
//!   given, time limits from the [`Control`] a host passes in.
//! - `BTreeMap`/`BTreeSet`, never `HashMap`, wherever an order can reach a result, a trace or a hash.
//! - Facts are never changed or removed; a different version of a fact is a conflict, not an update.
//! - Nothing a component returns can make the engine panic: every breach becomes a diagnostic.

mod context;
mod driver;
mod exec;
mod hash;
mod job;
mod merge;
mod model;
pub mod names;
mod report;
mod spec;
pub mod whole;

pub use context::{FactRef, View};
pub use driver::{Inputs, Journal, Silent, drive};
pub use exec::{Agent, Control, Execution, Executor, Interrupt, Invariant, NoInterrupt, RayonExecutor, SerialExecutor};
pub use hash::hex;
pub use job::{AnswerError, Job, JobError, check_agent_info, check_invariant_info};
pub use model::{AgentInfo, Effect, Fact, Failure, FailureKind, InvariantClass, InvariantInfo, Proposal, Question};
pub use report::{
    AgentStats, AgentTrace, ConflictDetail, CycleTrace, Diagnostic, DiagnosticKind, ErrorInfo, FactRecord,
    InvariantTrace, JobResult, OpenQuestion, Outcome, ProposalTrace, Reason, Stats, Status, ToolCall, ToolOutcome,
    ToolStats, Version,
};
pub use spec::{Budget, JobSpec, SpecError};
