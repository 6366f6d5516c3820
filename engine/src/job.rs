//! A job and its cycle loop: select, execute, merge, check (SPEC §2).
//!
//! [`Job::step`] runs one cycle; [`Job::run`] steps until the job ends or waits. Everything a cycle decides is
//! data in the job (status, diagnostics, trace), never a panic or an early return through `?`: the budget is a
//! typed outcome. The only sources of order are agent names, `(key, id)` and the order inside one effect, so a
//! job gives the same contexts whatever the executor, its thread count or the registration order.

use crate::context::{Context, Frozen, View};
use crate::exec::{Agent, Control, Execution, Executor, Interrupt, Invariant};
use crate::hash::context_hash;
use crate::model::{AgentInfo, Effect, Fact, Failure, FailureKind, InvariantClass, InvariantInfo, Proposal, Question};
use crate::names::{self, shown, truncate};
use crate::report::{
    AgentTrace, ConflictDetail, CycleTrace, Diagnostic, DiagnosticKind, ErrorInfo, FactRecord, InvariantTrace,
    JobResult, OpenQuestion, Outcome, ProposalTrace, Reason, Stats, Status, ToolCall, ToolOutcome, Version,
};
use crate::spec::{JobSpec, SpecError};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use thiserror::Error;

/// Longest diagnostic message kept, in bytes.
const MAX_MESSAGE: usize = 4096;

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

struct Member {
    agent: Arc<dyn Agent>,
    name: Arc<str>,
    reads: BTreeSet<String>,
    writes: BTreeSet<String>,
    required: bool,
}

struct Checker {
    invariant: Arc<dyn Invariant>,
    name: String,
    class: InvariantClass,
}

struct Asked {
    prompt: String,
    agent: String,
    /// The answer given, not yet applied.
    pending: Option<String>,
    /// Applied as `answers/<id>`.
    closed: bool,
}

/// Everything a job changes as it runs.
struct State {
    frozen: Arc<Frozen>,
    budget: crate::spec::Budget,
    min_confidence: f64,
    status: Status,
    reason: Option<Reason>,
    error: Option<ErrorInfo>,
    cycle: u32,
    dirty: BTreeSet<String>,
    questions: BTreeMap<String, Asked>,
    diagnostics: Vec<Diagnostic>,
    trace: Vec<CycleTrace>,
    stats: Stats,
    deterministic: bool,
    engine: Arc<str>,
    human: Arc<str>,
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
        };
        Ok(Self { members, checkers, state })
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

        // Select.
        let eligible: Vec<&Member> = self
            .members
            .iter()
            .filter(|a| cycle == 1 || a.reads.iter().any(|k| self.state.dirty.contains(k)))
            .collect();
        m.trace.eligible = eligible.iter().map(|a| a.name.to_string()).collect();

        // Execute, in parallel, against one frozen snapshot.
        let view = View(Arc::clone(&self.state.frozen));
        let runs = executor.map(eligible.len(), &|i| execute(eligible[i].agent.as_ref(), &view));
        drop(view);

        // Merge, serially, in agent-name order. (The span is a no-op unless the host installs a subscriber.)
        let merge_span = tracing::debug_span!("merge", cycle, effects = runs.len());
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
        tracing::debug!(
            inserted = m.trace.inserted,
            duplicates = m.trace.duplicates,
            rejected = m.trace.rejected,
            "merged"
        );
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
fn execute(agent: &dyn Agent, view: &View) -> Execution {
    catch_unwind(AssertUnwindSafe(|| agent.execute(view)))
        .unwrap_or_else(|_| Failure::trap("the agent panicked").into())
}

/// What one cycle's merge has done so far.
struct Merge {
    /// Ids inserted, per key, in merge order: pushing is cheaper than a set insert per fact, and the context
    /// sorts them once when it takes them (`set_added`).
    added: BTreeMap<String, Vec<String>>,
    /// Per applied effect with proposals: its index in the trace, the agent, the proposals.
    proposals: Vec<(usize, Arc<str>, Vec<Proposal>)>,
    trace: CycleTrace,
}

impl Merge {
    fn new(cycle: u32) -> Self {
        Self {
            added: BTreeMap::new(),
            proposals: Vec::new(),
            trace: CycleTrace {
                cycle,
                answers: Vec::new(),
                eligible: Vec::new(),
                agents: Vec::new(),
                inserted: 0,
                duplicates: 0,
                rejected: 0,
                promoted: Vec::new(),
                rejected_proposals: Vec::new(),
                questions: Vec::new(),
                invariants: Vec::new(),
                status: Status::Running,
            },
        }
    }
}

/// Whether a fact is new, already there, or in conflict with what is there.
enum Presence<'a> {
    New,
    Same,
    Conflict(&'a crate::context::Entry),
}

impl State {
    fn context(&mut self) -> &mut Context {
        &mut Arc::make_mut(&mut self.frozen).context
    }

    fn presence(&self, key: &str, id: &str, content: &str) -> Presence<'_> {
        match self.frozen.context.lookup(key, id) {
            None => Presence::New,
            Some(e) if e.content == content => Presence::Same,
            Some(e) => Presence::Conflict(e),
        }
    }

    fn room_for(&self, n: usize) -> bool {
        (self.frozen.context.len() as u64).saturating_add(n as u64) <= self.budget.max_facts
    }

    fn finish(&mut self, status: Status, kind: &str, message: String) {
        if !self.status.is_terminal() {
            self.status = status;
            self.error = Some(ErrorInfo { kind: kind.to_owned(), message });
        }
    }

    fn exhaust(&mut self, reason: Reason, message: String) {
        if !self.status.is_terminal() {
            self.reason = Some(reason);
            if reason == Reason::JobTimeout {
                self.deterministic = false;
            }
            self.finish(Status::BudgetExhausted, reason.as_str(), message);
        }
    }

    fn interrupt(&mut self, why: Interrupt) {
        match why {
            Interrupt::Cancel => self.finish(Status::Cancelled, "cancelled", "the job was cancelled".into()),
            Interrupt::JobTimeout => self.exhaust(
                Reason::JobTimeout,
                format!("the job ran past job_timeout_ms ({})", self.budget.job_timeout_ms),
            ),
        }
    }

    /// Insert facts known to be new and to fit, with provenance.
    fn insert_all(&mut self, facts: impl IntoIterator<Item = Fact>, agent: &Arc<str>, m: &mut Merge) {
        let cycle = self.cycle;
        let ctx = self.context();
        for f in facts {
            ctx.insert(&f.key, &f.id, f.content, agent, cycle);
            match m.added.get_mut(&f.key) {
                Some(ids) => ids.push(f.id),
                None => m.added.entry(f.key).or_default().push(f.id),
            }
            m.trace.inserted += 1;
        }
    }

    /// The fast path of a merge: if every fact of a validated effect fits under `max_facts`, insert the absent
    /// ones with one search each. If one conflicts, nothing stays inserted and the facts come back for the
    /// careful path of `merge_effect`, which records the conflict. Returns the facts left to that path (none on
    /// success), how many were inserted and how many were already present.
    fn insert_clean(&mut self, facts: Vec<Fact>, agent: &Arc<str>, m: &mut Merge) -> (Vec<Fact>, u64, u64) {
        if facts.is_empty() || !self.room_for(facts.len()) {
            return (facts, 0, 0);
        }
        let total = facts.len() as u64;
        let cycle = self.cycle;
        let inserted = match self.context().insert_absent(facts, agent, cycle) {
            Ok(inserted) => inserted,
            Err(facts) => return (facts, 0, 0),
        };
        let n = inserted.len() as u64;
        for (key, id) in inserted {
            match m.added.get_mut(&key) {
                Some(ids) => ids.push(id),
                None => m.added.entry(key).or_default().push(id),
            }
        }
        m.trace.inserted += n;
        (Vec::new(), n, total - n)
    }

    /// Record a diagnostic and insert it as `diagnostics/<agent>@<cycle>` if the fact budget allows.
    fn diagnose(&mut self, diagnostic: Diagnostic, m: &mut Merge) {
        let id = format!("{}@{}", diagnostic.agent, diagnostic.cycle);
        let content =
            serde_json::to_string(&diagnostic).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
        self.diagnostics.push(diagnostic);
        if self.frozen.context.lookup(names::DIAGNOSTICS, &id).is_some() {
            return; // one record per component and cycle; the list above keeps every one
        }
        if !self.room_for(1) {
            self.exhaust(
                Reason::Facts,
                format!("no room under max_facts ({}) for diagnostic {id}", self.budget.max_facts),
            );
            return;
        }
        let engine = Arc::clone(&self.engine);
        self.insert_all([Fact::new(names::DIAGNOSTICS, id, content)], &engine, m);
    }

    fn fail(&mut self, member: &Member, failure: Failure, fuel: u64, rejected: u64, m: &mut Merge) {
        if failure.kind == FailureKind::Deadline {
            self.deterministic = false;
        }
        if let Some(s) = self.stats.agents.get_mut(&*member.name) {
            s.failures += 1;
        }
        let message = truncate(failure.message, MAX_MESSAGE);
        m.trace.rejected += rejected;
        m.trace.agents.push(AgentTrace {
            agent: member.name.to_string(),
            outcome: Outcome::Failed(failure.kind),
            fuel,
            inserted: 0,
            duplicates: 0,
            rejected,
            message: Some(message.clone()),
            memory: 0,
            logs: Vec::new(),
            time_us: 0,
            tools: Vec::new(),
        });
        let cycle = self.cycle;
        self.diagnose(
            Diagnostic {
                agent: member.name.to_string(),
                cycle,
                kind: failure.kind.into(),
                message: message.clone(),
                conflict: None,
            },
            m,
        );
        if member.required {
            self.finish(
                Status::AgentFailed,
                "agent_failed",
                format!("required agent {} failed in cycle {cycle}: {}: {message}", member.name, failure.kind),
            );
        }
    }

    fn conflict(&mut self, agent: &Arc<str>, key: &str, id: &str, content: &str, m: &mut Merge) {
        let Presence::Conflict(existing) = self.presence(key, id, content) else { return };
        let cycle = self.cycle;
        let detail = ConflictDetail {
            key: key.to_owned(),
            id: id.to_owned(),
            existing: Version {
                agent: existing.agent.to_string(),
                cycle: existing.cycle,
                content: existing.content.clone(),
            },
            incoming: Version { agent: agent.to_string(), cycle, content: content.to_owned() },
        };
        let message = format!(
            "{agent} would change ({}, {}) written by {} in cycle {}",
            shown(key),
            shown(id),
            detail.existing.agent,
            detail.existing.cycle
        );
        self.diagnose(
            Diagnostic {
                agent: agent.to_string(),
                cycle,
                kind: DiagnosticKind::Conflict,
                message: message.clone(),
                conflict: Some(detail),
            },
            m,
        );
        self.finish(Status::Conflict, "conflict", message);
    }

    fn count_tools(&mut self, calls: &[ToolCall]) {
        for call in calls {
            let stats = self.stats.tools.entry(call.tool.clone()).or_default();
            stats.calls += 1;
            stats.fuel += call.fuel;
            if call.outcome != ToolOutcome::Ok {
                stats.failures += 1;
            }
            self.stats.tool_calls += 1;
            self.stats.tool_fuel += call.fuel;
        }
    }

    fn merge_effect(&mut self, member: &Member, run: Execution, m: &mut Merge) {
        let stats = self.stats.agents.entry(member.name.to_string()).or_default();
        stats.calls += 1;
        stats.fuel += run.fuel;
        self.stats.agent_calls += 1;
        self.stats.fuel += run.fuel;
        if self.status.is_terminal() {
            m.trace.agents.push(AgentTrace {
                agent: member.name.to_string(),
                outcome: Outcome::Skipped,
                fuel: run.fuel,
                inserted: 0,
                duplicates: 0,
                rejected: run.result.as_ref().map_or(0, |e| e.facts.len() as u64),
                message: None,
                memory: 0,
                logs: Vec::new(),
                time_us: 0,
                tools: Vec::new(),
            });
            return;
        }
        let effect = match run.result {
            Err(failure) => return self.fail(member, failure, run.fuel, 0, m),
            Ok(effect) => effect,
        };
        let emitted = effect.facts.len() as u64;
        let effect = match validate(effect, member, self.budget.max_fact_bytes) {
            Ok(effect) => effect,
            Err(message) => {
                return self.fail(member, Failure::new(FailureKind::InvalidEffect, message), run.fuel, emitted, m);
            }
        };
        let (facts, done, mut duplicates) = self.insert_clean(effect.facts, &member.name, m);
        let mut fresh = Vec::new();
        for f in facts {
            match self.presence(&f.key, &f.id, &f.content) {
                Presence::New => fresh.push(f),
                Presence::Same => duplicates += 1,
                Presence::Conflict(_) => {
                    self.conflict(&member.name, &f.key, &f.id, &f.content, m);
                    return Self::not_applied(member, Outcome::Conflict, run.fuel, emitted, m);
                }
            }
        }
        if !self.room_for(fresh.len()) {
            self.exhaust(
                Reason::Facts,
                format!(
                    "{} would insert {} facts into {} with max_facts {}",
                    member.name,
                    fresh.len(),
                    self.frozen.context.len(),
                    self.budget.max_facts
                ),
            );
            return Self::not_applied(member, Outcome::OverBudget, run.fuel, emitted, m);
        }
        let inserted = done + fresh.len() as u64;
        self.insert_all(fresh, &member.name, m);
        m.trace.duplicates += duplicates;
        for q in effect.questions {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.questions.entry(q.id) {
                m.trace.questions.push(slot.key().clone());
                slot.insert(Asked { prompt: q.prompt, agent: member.name.to_string(), pending: None, closed: false });
            }
        }
        if !effect.proposals.is_empty() {
            let index = m.trace.agents.len();
            m.proposals.push((index, Arc::clone(&member.name), effect.proposals));
        }
        m.trace.agents.push(AgentTrace {
            agent: member.name.to_string(),
            outcome: Outcome::Applied,
            fuel: run.fuel,
            inserted,
            duplicates,
            rejected: 0,
            message: None,
            memory: 0,
            logs: Vec::new(),
            time_us: 0,
            tools: Vec::new(),
        });
    }

    fn not_applied(member: &Member, outcome: Outcome, fuel: u64, rejected: u64, m: &mut Merge) {
        m.trace.rejected += rejected;
        m.trace.agents.push(AgentTrace {
            agent: member.name.to_string(),
            outcome,
            fuel,
            inserted: 0,
            duplicates: 0,
            rejected,
            message: None,
            memory: 0,
            logs: Vec::new(),
            time_us: 0,
            tools: Vec::new(),
        });
    }

    /// Rule 6: after every effect, proposals in the same agent order.
    fn merge_proposals(&mut self, m: &mut Merge) {
        let proposals = std::mem::take(&mut m.proposals);
        for (index, agent, list) in proposals {
            for p in list {
                if self.status.is_terminal() {
                    return;
                }
                let record = ProposalTrace {
                    agent: agent.to_string(),
                    key: p.fact.key.clone(),
                    id: p.fact.id.clone(),
                    confidence: p.confidence,
                };
                if p.confidence < self.min_confidence {
                    m.trace.rejected_proposals.push(record);
                    continue;
                }
                match self.presence(&p.fact.key, &p.fact.id, &p.fact.content) {
                    Presence::Same => m.trace.duplicates += 1,
                    Presence::Conflict(_) => self.conflict(&agent, &p.fact.key, &p.fact.id, &p.fact.content, m),
                    Presence::New if !self.room_for(1) => self.exhaust(
                        Reason::Facts,
                        format!("promoting a proposal of {agent} would exceed max_facts ({})", self.budget.max_facts),
                    ),
                    Presence::New => {
                        if let Some(t) = m.trace.agents.get_mut(index) {
                            t.inserted += 1;
                        }
                        self.insert_all([p.fact], &agent, m);
                        m.trace.promoted.push(record);
                    }
                }
            }
        }
    }

    /// Rule 7: insert every pending answer together, just before the next cycle.
    fn apply_answers(&mut self, m: &mut Merge) {
        let pending: Vec<(String, String)> = self
            .questions
            .iter_mut()
            .filter(|(_, q)| !q.closed)
            .filter_map(|(id, q)| q.pending.take().map(|a| (id.clone(), a)))
            .collect();
        for (id, _) in &pending {
            if let Some(q) = self.questions.get_mut(id) {
                q.closed = true;
            }
        }
        let fresh: Vec<Fact> = pending
            .into_iter()
            .filter(|(id, _)| self.frozen.context.lookup(names::ANSWERS, id).is_none())
            .map(|(id, a)| Fact::new(names::ANSWERS, id, a))
            .collect();
        if !self.room_for(fresh.len()) {
            self.exhaust(Reason::Facts, format!("no room under max_facts ({}) for the answers", self.budget.max_facts));
            return;
        }
        m.trace.answers = fresh.iter().map(|f| f.id.clone()).collect();
        let human = Arc::clone(&self.human);
        let mut answers = Merge::new(self.cycle);
        self.insert_all(fresh, &human, &mut answers);
        // Answers count as inserted by the cycle before the next one: `added(answers)` returns them and their
        // key is dirty for the next cycle.
        self.dirty.extend(answers.added.keys().cloned());
        self.context().extend_added(answers.added);
    }

    /// Rule 9: run the invariants of `class`; any violation ends the job.
    fn check<E: Executor>(&mut self, checkers: &[Checker], class: InvariantClass, executor: &E, m: &mut Merge) {
        let chosen: Vec<&Checker> = checkers.iter().filter(|c| c.class == class).collect();
        if chosen.is_empty() || self.status.is_terminal() {
            return;
        }
        let view = View(Arc::clone(&self.frozen));
        let verdicts = executor.map(chosen.len(), &|i| {
            catch_unwind(AssertUnwindSafe(|| chosen[i].invariant.check(&view)))
                .unwrap_or_else(|_| Err(Failure::trap("the invariant panicked")))
        });
        drop(view);
        let mut violated = Vec::new();
        for (c, verdict) in chosen.iter().zip(verdicts) {
            let message = verdict.err().map(|f| {
                if f.kind == FailureKind::Deadline {
                    self.deterministic = false;
                }
                let text = truncate(f.message, MAX_MESSAGE);
                if f.kind == FailureKind::Refused { text } else { format!("could not check ({}): {text}", f.kind) }
            });
            m.trace.invariants.push(InvariantTrace {
                name: c.name.clone(),
                class,
                held: message.is_none(),
                message: message.clone(),
            });
            if let Some(message) = message {
                violated.push((c.name.clone(), message));
            }
        }
        let cycle = self.cycle;
        let summary = violated.iter().map(|(n, msg)| format!("{n}: {msg}")).collect::<Vec<_>>().join("; ");
        for (name, message) in violated {
            self.diagnose(
                Diagnostic { agent: name, cycle, kind: DiagnosticKind::InvariantViolated, message, conflict: None },
                m,
            );
        }
        if !summary.is_empty() {
            // A violation outranks a fact budget hit while recording it.
            self.status = Status::InvariantViolated;
            self.reason = None;
            self.error = Some(ErrorInfo {
                kind: "invariant_violated".into(),
                message: format!("{class} invariant violated: {summary}"),
            });
        }
    }
}

/// Rule 4: validate a whole effect before any of it is applied. Returns it with facts sorted by `(key, id)`
/// and exact repeats removed.
fn validate(mut effect: Effect, member: &Member, max_bytes: u64) -> Result<Effect, String> {
    let check_fact = |what: &str, i: usize, f: &Fact| -> Result<(), String> {
        names::check_key(&f.key).map_err(|e| format!("{what} {i}: {e}"))?;
        if names::is_reserved_key(&f.key) {
            return Err(format!("{what} {i}: key {} is reserved", shown(&f.key)));
        }
        if !member.writes.contains(&f.key) {
            return Err(format!("{what} {i}: key {} is not in the agent's writes", shown(&f.key)));
        }
        names::check_id(&f.id).map_err(|e| format!("{what} {i}: {e}"))?;
        if f.content.len() as u64 > max_bytes {
            return Err(format!(
                "{what} {i}: content is {} bytes, more than max_fact_bytes ({max_bytes})",
                f.content.len()
            ));
        }
        Ok(())
    };
    for (i, f) in effect.facts.iter().enumerate() {
        check_fact("fact", i, f)?;
    }
    for (i, p) in effect.proposals.iter().enumerate() {
        check_fact("proposal", i, &p.fact)?;
        if !p.confidence.is_finite() || !(0.0..=1.0).contains(&p.confidence) {
            return Err(format!("proposal {i}: confidence {} is not in [0, 1]", p.confidence));
        }
        if p.rationale.len() as u64 > max_bytes {
            return Err(format!("proposal {i}: rationale is longer than max_fact_bytes ({max_bytes})"));
        }
    }
    for (i, q) in effect.questions.iter().enumerate() {
        names::check_id(&q.id).map_err(|e| format!("question {i}: {e}"))?;
        if q.prompt.len() as u64 > max_bytes {
            return Err(format!("question {i}: prompt is longer than max_fact_bytes ({max_bytes})"));
        }
    }
    let by_identity = |a: &Fact, b: &Fact| (&a.key, &a.id).cmp(&(&b.key, &b.id));
    effect.facts.sort_unstable_by(by_identity);
    dedup(&mut effect.facts, |f| f)?;
    effect.proposals.sort_by(|a, b| by_identity(&a.fact, &b.fact));
    dedup(&mut effect.proposals, |p| &p.fact)?;
    for p in &effect.proposals {
        if let Ok(i) = effect.facts.binary_search_by(|f| by_identity(f, &p.fact))
            && effect.facts[i].content != p.fact.content
        {
            return Err(format!(
                "({}, {}) is both a fact and a proposal, with different content",
                shown(&p.fact.key),
                shown(&p.fact.id)
            ));
        }
    }
    effect.questions.sort_by(|a, b| a.id.cmp(&b.id));
    dedup_questions(&mut effect.questions)?;
    Ok(effect)
}

/// Drop exact repeats from a list sorted by identity; a repeat with other content is an error.
fn dedup<T>(list: &mut Vec<T>, fact: impl Fn(&T) -> &Fact) -> Result<(), String> {
    for pair in list.windows(2) {
        let (a, b) = (fact(&pair[0]), fact(&pair[1]));
        if a.key == b.key && a.id == b.id && a.content != b.content {
            return Err(format!("({}, {}) appears twice with different content", shown(&a.key), shown(&a.id)));
        }
    }
    list.dedup_by(|b, a| {
        let (a, b) = (fact(a), fact(b));
        a.key == b.key && a.id == b.id
    });
    Ok(())
}

fn dedup_questions(list: &mut Vec<Question>) -> Result<(), String> {
    for pair in list.windows(2) {
        if pair[0].id == pair[1].id && pair[0].prompt != pair[1].prompt {
            return Err(format!("question {} appears twice with different prompts", shown(&pair[0].id)));
        }
    }
    list.dedup_by(|b, a| a.id == b.id);
    Ok(())
}
