//! How the engine reaches the code it runs: the [`Agent`] and [`Invariant`] traits, the [`Executor`] of the
//! parallel phase, and the [`Control`] a host uses to cancel a job or end it on its wall-clock limit.
//!
//! Native agents implement the traits directly (the tests do); the host implements them for sandboxed
//! components. The engine never spawns a thread: parallelism comes only from the executor it is given.

use crate::context::View;
use crate::model::{AgentInfo, Effect, Failure, InvariantInfo};
use crate::report::ToolCall;
use rayon::prelude::*;
use std::sync::Arc;

/// Something that executes against a frozen context and returns an effect or a failure.
pub trait Agent: Send + Sync {
    /// The declaration, fixed for the agent's lifetime.
    fn info(&self) -> &AgentInfo;
    /// Run once against the cycle's snapshot.
    fn execute(&self, view: &View) -> Execution;
}

/// Something that checks a frozen context.
pub trait Invariant: Send + Sync {
    /// The declaration, fixed for the invariant's lifetime.
    fn info(&self) -> &InvariantInfo;
    /// `Ok` if the invariant holds; a failure of kind `refused` is a plain violation, any other kind means the
    /// check could not run, which counts as a violation too (fail closed).
    ///
    /// # Errors
    /// The violation, or why the check could not complete.
    fn check(&self, view: &View) -> Result<(), Failure>;
}

/// The outcome of one agent call, with the resources and time it used (0 and nothing for native agents).
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// The effect, or why there is none.
    pub result: Result<Effect, Failure>,
    /// Fuel consumed by the call.
    pub fuel: u64,
    /// Peak memory of the call's instance, in bytes, every memory counted.
    pub memory: u64,
    /// What the call logged and wrote to stdout/stderr, capped by the host; copied into the cycle's trace.
    pub logs: Vec<String>,
    /// Wall time of the call in microseconds, set by the host (0 when not measured); copied into the cycle's
    /// trace, never into the context or its hash.
    pub time_us: u64,
    /// The tools the call invoked, in order; copied into the cycle's trace and counted in the job's stats.
    pub tools: Vec<ToolCall>,
}

impl From<Result<Effect, Failure>> for Execution {
    fn from(result: Result<Effect, Failure>) -> Self {
        Self { result, fuel: 0, memory: 0, logs: Vec::new(), time_us: 0, tools: Vec::new() }
    }
}

impl From<Effect> for Execution {
    fn from(effect: Effect) -> Self {
        Ok(effect).into()
    }
}

impl From<Failure> for Execution {
    fn from(failure: Failure) -> Self {
        Err(failure).into()
    }
}

/// Runs the calls of one phase, possibly in parallel, and returns their results in index order.
pub trait Executor: Sync {
    /// `(0..len).map(f)`, in any order or concurrently, collected in index order.
    fn map<R: Send>(&self, len: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R>;
}

/// Runs every call on the calling thread, in order.
#[derive(Debug, Clone, Copy, Default)]
pub struct SerialExecutor;

impl Executor for SerialExecutor {
    fn map<R: Send>(&self, len: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        (0..len).map(f).collect()
    }
}

/// Runs calls on a rayon pool: the global one, or one the caller built (to choose the thread count).
#[derive(Debug, Clone, Default)]
pub struct RayonExecutor {
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl RayonExecutor {
    /// Use rayon's global pool.
    pub fn global() -> Self {
        Self { pool: None }
    }

    /// Use `pool`.
    pub fn new(pool: Arc<rayon::ThreadPool>) -> Self {
        Self { pool: Some(pool) }
    }
}

impl Executor for RayonExecutor {
    fn map<R: Send>(&self, len: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        let run = || (0..len).into_par_iter().map(f).collect();
        match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }
}

/// Why a host stops a job from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interrupt {
    /// A client cancelled the job.
    Cancel,
    /// The job's wall-clock limit passed.
    JobTimeout,
}

/// Asked by the engine before and after each parallel phase. The engine reads no clock itself: a host
/// that enforces `job_timeout_ms` answers [`Interrupt::JobTimeout`] here.
pub trait Control: Sync {
    /// `Some` to stop the job now.
    fn interrupt(&self) -> Option<Interrupt>;
}

/// Never interrupts.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInterrupt;

impl Control for NoInterrupt {
    fn interrupt(&self) -> Option<Interrupt> {
        None
    }
}
