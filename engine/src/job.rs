//! A job and its cycle loop: select, execute, merge, check (SPEC §2).
//!
//! [`Job::step`] runs one cycle; [`Job::run`] steps until the job ends or waits. Everything a cycle decides is
//! data in the job (status, diagnostics, trace), never a panic or an early return through `?`: the budget is a
//! typed outcome. The only sources of order are agent names, `(key, id)` and the order inside one effect, so a
//! job gives the same contexts whatever the executor, its thread count or the registration order.

use crate::context::{Context, Frozen, View};
use crate::exec::{Agent, Control, Execution, Executor, Interrupt, Invariant};
use crate::hash::context_hash;
use crate::merge::{Merge, State};
use crate::model::{AgentInfo, Failure, InvariantClass, InvariantInfo};
use crate::names::{self, shown};
use crate::report::{CycleTrace, FactRecord, JobResult, OpenQuestion, Reason, Stats, Status};
use crate::spec::{JobSpec, SpecError};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use thiserror::Error;

/// A job that cannot be built from its spec and the loaded components.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JobError {
    /// The spec is malformed or names something that is not loaded.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A component's declaration is unusable.
    #[error("component {name}: {message}")]
    Component {
        /// Its name as declared.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// An answer that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// No question with this id was ever asked in the job.
    #[error("no question {0} was asked in this job")]
    UnknownQuestion(String),
    /// The question has an answer already.
    #[error("question {0} is already answered")]
    AlreadyAnswered(String),
    /// The job has ended.
    #[error("the job has ended with status {0}")]
    Finished(Status),
    /// The answer is larger than `max_fact_bytes`.
    #[error("the answer is {size} bytes, more than budget.max_fact_bytes ({max})")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: u64,
    },
}

/// Check an agent's declaration: a well-formed name, well-formed `reads`, well-formed and unreserved `writes`.
///
/// # Errors
/// A sentence naming the first problem.
pub fn check_agent_info(info: &AgentInfo) -> Result<(), String> {
    names::check_name(&info.name).map_err(|e| e.to_string())?;
    for key in &info.reads {
        names::check_key(key).map_err(|e| format!("reads: {e}"))?;
    }
    for key in &info.writes {
        names::check_key(key).map_err(|e| format!("writes: {e}"))?;
        if names::is_reserved_key(key) {
            return Err(format!("writes: key {} is reserved", shown(key)));
        }
    }
    for tool in &info.tools {
        if tool.is_empty() || tool.len() > 200 || tool.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("tools: {} is not a tool name", shown(tool)));
        }
    }
    Ok(())
}

/// Check an invariant's declaration.
///
/// # Errors
/// A sentence naming the problem.
pub fn check_invariant_info(info: &InvariantInfo) -> Result<(), String> {
    names::check_name(&info.name).map_err(|e| e.to_string())
}

pub(crate) struct Member {
    pub(crate) agent: Arc<dyn Agent>,
    pub(crate) name: Arc<str>,
    pub(crate) reads: BTreeSet<String>,
    pub(crate) writes: BTreeSet<String>,
    pub(crate) required: bool,
}

pub(crate) struct Checker {
    pub(crate) invariant: Arc<dyn Invariant>,
    pub(crate) name: String,
    pub(crate) class: InvariantClass,
}

pub(crate) struct Asked {
    pub(crate) prompt: String,
    pub(crate) agent: String,
    /// The answer given, not yet applied.
    pub(crate) pending: Option<String>,
    /// Applied as `answers/<id>`.
    pub(crate) closed: bool,
}

/// One job: its agents, invariants and state.
pub struct Job {
    members: Vec<Member>,
    checkers: Vec<Checker>,
    state: State,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("status", &self.state.status)
            .field("cycle", &self.state.cycle)
            .field("facts", &self.state.frozen.context.len())
            .finish_non_exhaustive()
    }
}

impl Job {
    /// Build a job from a spec and the loaded components (in any order: the job sorts them by name).
    ///
    /// # Errors
    /// [`JobError::Spec`] for a bad spec or a name that is not loaded; [`JobError::Component`] for a bad or
    /// duplicate declaration.
    pub fn new(spec: &JobSpec, agents: &[Arc<dyn Agent>], invariants: &[Arc<dyn Invariant>]) -> Result<Self, JobError> {
        spec.validate()?;
        let mut by_name: BTreeMap<&str, &Arc<dyn Agent>> = BTreeMap::new();
        let mut taken = BTreeSet::new();
        for agent in agents {
            let info = agent.info();
            check_agent_info(info).map_err(|message| JobError::Component { name: shown(&info.name), message })?;
            if !taken.insert(info.name.as_str()) {
                return Err(duplicate(&info.name));
            }
            by_name.insert(&info.name, agent);
        }
        let mut inv_by_name: BTreeMap<&str, &Arc<dyn Invariant>> = BTreeMap::new();
        for inv in invariants {
            let info = inv.info();
            check_invariant_info(info).map_err(|message| JobError::Component { name: shown(&info.name), message })?;
            if !taken.insert(info.name.as_str()) {
                return Err(duplicate(&info.name));
            }
            inv_by_name.insert(&info.name, inv);
        }
        let selected: Vec<&Arc<dyn Agent>> = match &spec.agents {
            None => by_name.values().copied().collect(),
            Some(list) => {
                let mut chosen = BTreeMap::new();
                for (i, name) in list.iter().enumerate() {
                    let agent = by_name.get(name.as_str()).ok_or_else(|| {
                        SpecError::new(format!("agents[{i}]"), format!("unknown agent {}", shown(name)))
                    })?;
                    chosen.insert(name.as_str(), *agent);
                }
                chosen.into_values().collect()
            }
        };
        let members = selected
            .into_iter()
            .map(|agent| {
                let info = agent.info();
                Member {
                    agent: Arc::clone(agent),
                    name: Arc::from(info.name.as_str()),
                    reads: info.reads.iter().cloned().collect(),
                    writes: info.writes.iter().cloned().collect(),
                    required: info.required,
                }
            })
            .collect();
        let mut checkers = Vec::new();
        for (i, name) in spec.invariants.iter().enumerate() {
            let inv = inv_by_name.get(name.as_str()).ok_or_else(|| {
                SpecError::new(format!("invariants[{i}]"), format!("unknown invariant {}", shown(name)))
            })?;
            let info = inv.info();
            checkers.push(Checker { invariant: Arc::clone(inv), name: info.name.clone(), class: info.class });
        }
        checkers.sort_by(|a, b| (a.class, &a.name).cmp(&(b.class, &b.name)));

        let mut context = Context::default();
        let seed: Arc<str> = Arc::from(names::SEED);
        let mut added: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &spec.facts {
            if context.lookup(&f.key, &f.id).is_none() {
                context.insert(&f.key, &f.id, f.content.clone(), &seed, 0);
                added.entry(f.key.clone()).or_default().insert(f.id.clone());
            }
        }
        let dirty = added.keys().cloned().collect();
        context.set_added(added);
        let state = State {
            frozen: Arc::new(Frozen { context, cycle: 0, goal: Arc::from(spec.goal.as_str()) }),
            budget: spec.budget,
            min_confidence: spec.min_confidence,
            status: Status::Queued,
            reason: None,
            error: None,
            cycle: 0,
            dirty,
            questions: BTreeMap::new(),
            diagnostics: Vec::new(),
            trace: Vec::new(),
            stats: Stats::default(),
            deterministic: true,
            engine: Arc::from(names::ENGINE),
            human: Arc::from(names::HUMAN),
            id: Arc::from(""),
        };
        Ok(Self { members, checkers, state })
    }

    /// Name the job `id` in its spans (`converge.job_id` of `cycle`, `agent`, `invariant` and `merge`, SPEC
    /// §8). Only the spans see it: never the context, a result or a hash.
    #[must_use]
    pub fn traced_as(mut self, id: &str) -> Self {
        self.state.id = Arc::from(id);
        self
    }

    /// Where the job stands.
    pub fn status(&self) -> Status {
        self.state.status
    }

    /// Cycles run so far.
    pub fn cycles(&self) -> u32 {
        self.state.cycle
    }

    /// The context as it is now.
    pub fn view(&self) -> View {
        View(Arc::clone(&self.state.frozen))
    }

    /// SHA-256 of the canonical context (see the `hash` module for the encoding).
    pub fn context_hash(&self) -> String {
        context_hash(&self.state.frozen.context)
    }

    /// Every cycle's trace so far.
    pub fn trace(&self) -> &[CycleTrace] {
        &self.state.trace
    }

    /// Questions asked and not yet applied, by id.
    pub fn open_questions(&self) -> Vec<OpenQuestion> {
        self.state
            .questions
            .iter()
            .filter(|(_, q)| !q.closed)
            .map(|(id, q)| OpenQuestion { id: id.clone(), prompt: q.prompt.clone(), agent: q.agent.clone() })
            .collect()
    }

    /// Give the answer to an open question. It is applied, with every other answer, when the job is waiting and
    /// every open question has an answer: the answers then become `answers/<id>` facts together, so the final
    /// context depends on the answers and never on the order or the moment they arrived.
    ///
    /// # Errors
    /// An unknown or answered question, a finished job, or an answer over `max_fact_bytes`.
    pub fn answer(&mut self, question: &str, answer: String) -> Result<(), AnswerError> {
        let st = &mut self.state;
        if st.status.is_terminal() {
            return Err(AnswerError::Finished(st.status));
        }
        let max = st.budget.max_fact_bytes;
        let q = st.questions.get_mut(question).ok_or_else(|| AnswerError::UnknownQuestion(shown(question)))?;
        if q.closed || q.pending.is_some() {
            return Err(AnswerError::AlreadyAnswered(shown(question)));
        }
        if answer.len() as u64 > max {
            return Err(AnswerError::TooLarge { size: answer.len(), max });
        }
        q.pending = Some(answer);
        Ok(())
    }

    /// Whether a waiting job has every answer it needs to resume.
    pub fn ready_to_resume(&self) -> bool {
        self.state.status == Status::Waiting && self.state.questions.values().all(|q| q.closed || q.pending.is_some())
    }

    /// End the job with status `cancelled`, unless it has ended already.
    pub fn cancel(&mut self) {
        self.state.interrupt(Interrupt::Cancel);
    }

    /// Run cycles until the job ends or waits for answers.
    pub fn run<E: Executor, C: Control>(&mut self, executor: &E, control: &C) -> Status {
        while self.step(executor, control).is_some() {}
        self.state.status
    }

    /// Run one cycle, if the job can: not ended, and not waiting for answers. Returns the cycle's trace.
    pub fn step<E: Executor, C: Control>(&mut self, executor: &E, control: &C) -> Option<&CycleTrace> {
        let status = self.state.status;
        if status.is_terminal() || (status == Status::Waiting && !self.ready_to_resume()) {
            return None;
        }
        if let Some(why) = control.interrupt() {
            self.state.interrupt(why);
            return None;
        }
        let st = &mut self.state;
        st.status = Status::Running;
        let cycle = st.cycle + 1;
        let mut m = Merge::new(cycle);
        if status == Status::Waiting {
            // Answers given while the job was still running wait here too, so only their content matters.
            st.apply_answers(&mut m);
        }
        if st.status.is_terminal() || cycle > st.budget.max_cycles {
            if !st.status.is_terminal() {
                st.exhaust(Reason::Cycles, format!("the job ran its {} cycles", st.budget.max_cycles));
            }
            return None;
        }
        st.cycle = cycle;
        Arc::make_mut(&mut st.frozen).cycle = cycle;
        // The cycle's span holds its agent calls, its merge and its checks (no-ops unless the host installs a
        // subscriber). Debug, like theirs: a log at info formats no per-cycle span (a trace exporter takes every
        // level).
        let cycle_span = tracing::debug_span!(
            "cycle",
            converge.job_id = &*st.id,
            converge.cycle = i64::from(cycle),
            converge.eligible = tracing::field::Empty,
            converge.added = tracing::field::Empty,
            converge.outcome = tracing::field::Empty,
        );
        let _cycle = cycle_span.enter();

        // Select.
        let eligible: Vec<&Member> = self
            .members
            .iter()
            .filter(|a| cycle == 1 || a.reads.iter().any(|k| self.state.dirty.contains(k)))
            .collect();
        m.trace.eligible = eligible.iter().map(|a| a.name.to_string()).collect();
        cycle_span.record("converge.eligible", attr(eligible.len()));

        // Execute, in parallel, against one frozen snapshot. The calls run on the executor's threads: each
        // span names its parent explicitly.
        let view = View(Arc::clone(&self.state.frozen));
        let id = &*self.state.id;
        let runs = executor.map(eligible.len(), &|i| execute(eligible[i], &view, &cycle_span, id));
        drop(view);

        // Merge, serially, in agent-name order.
        let merge_span = tracing::debug_span!(
            "merge",
            converge.job_id = id,
            converge.cycle = i64::from(cycle),
            converge.effects = attr(runs.len()),
            converge.inserted = tracing::field::Empty,
            converge.rejected = tracing::field::Empty,
        );
        let merge_guard = merge_span.enter();
        let st = &mut self.state;
        if let Some(why) = control.interrupt() {
            st.interrupt(why);
        }
        for (member, mut run) in eligible.iter().zip(runs) {
            let (memory, time_us, logs) = (run.memory, run.time_us, std::mem::take(&mut run.logs));
            let tools = std::mem::take(&mut run.tools);
            st.count_tools(&tools);
            let at = m.trace.agents.len();
            st.merge_effect(member, run, &mut m);
            if let Some(t) = m.trace.agents.get_mut(at) {
                t.memory = memory;
                t.time_us = time_us;
                t.logs = logs;
                t.tools = tools;
            }
        }
        st.merge_proposals(&mut m);
        let new_added = std::mem::take(&mut m.added);
        st.dirty = new_added.keys().cloned().collect();
        Arc::make_mut(&mut st.frozen).context.set_added(new_added);
        merge_span
            .record("converge.inserted", attr(m.trace.inserted))
            .record("converge.rejected", attr(m.trace.rejected));
        drop(merge_guard);

        // Check.
        if !st.status.is_terminal() {
            for class in [InvariantClass::Structural, InvariantClass::Semantic] {
                st.check(&self.checkers, class, executor, &mut m);
            }
        }
        let st = &mut self.state;
        if !st.status.is_terminal() {
            let quiet = m.trace.inserted == 0 && m.trace.promoted.is_empty() && m.trace.questions.is_empty();
            if quiet && st.questions.values().any(|q| !q.closed) {
                st.status = Status::Waiting;
            } else if quiet {
                st.check(&self.checkers, InvariantClass::Acceptance, executor, &mut m);
                if !st.status.is_terminal() {
                    st.status = Status::Converged;
                }
            } else if cycle >= st.budget.max_cycles {
                st.exhaust(Reason::Cycles, format!("cycle {cycle} of {} was not quiet", st.budget.max_cycles));
            }
        }
        m.trace.status = st.status;
        cycle_span.record("converge.added", attr(m.trace.inserted)).record("converge.outcome", st.status.as_str());
        st.trace.push(m.trace);
        st.trace.last()
    }

    /// The SPEC §4 result as it stands, under the host-assigned `id`.
    pub fn result(&self, id: impl Into<String>) -> JobResult {
        let st = &self.state;
        JobResult {
            id: id.into(),
            status: st.status,
            reason: st.reason,
            cycles: st.cycle,
            facts: st
                .frozen
                .context
                .iter()
                .map(|f| FactRecord {
                    key: f.key.to_owned(),
                    id: f.id.to_owned(),
                    content: f.content.to_owned(),
                    agent: f.agent.to_owned(),
                    cycle: f.cycle,
                })
                .collect(),
            open_questions: self.open_questions(),
            diagnostics: st.diagnostics.clone(),
            context_hash: self.context_hash(),
            deterministic: st.deterministic,
            stats: st.stats.clone(),
            error: st.error.clone(),
        }
    }
}

fn duplicate(name: &str) -> JobError {
    JobError::Component { name: shown(name), message: "another agent or invariant has this name".into() }
}

/// Call an agent; a native agent that panics fails like a guest that traps.
/// A count as a span attribute: OpenTelemetry's integers are `i64` (tracing's `u64` would arrive as text).
pub(crate) fn attr(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// One agent call, in a span of its own under the cycle's `parent` (the call may run on another thread).
fn execute(member: &Member, view: &View, parent: &tracing::Span, id: &str) -> Execution {
    let span = tracing::debug_span!(
        parent: parent,
        "agent",
        converge.job_id = id,
        converge.agent = &*member.name,
        converge.cycle = i64::from(view.cycle()),
        converge.fuel = tracing::field::Empty,
        converge.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let _enter = span.enter();
    let run = catch_unwind(AssertUnwindSafe(|| member.agent.execute(view)))
        .unwrap_or_else(|_| Failure::trap("the agent panicked").into());
    span.record("converge.fuel", attr(run.fuel));
    match &run.result {
        Ok(_) => span.record("converge.outcome", "ok"),
        Err(f) => span.record("converge.outcome", f.kind.as_str()).record("otel.status_code", "ERROR"),
    };
    run
}
