//! The merge rules of one cycle (SPEC §2 rules 4 to 11): validate an effect whole, insert what is new, record a
//! conflict instead of overwriting, promote proposals, apply answers, run invariants, and turn every budget hit
//! into a status. [`Job::step`](crate::Job::step) calls these in order; nothing here runs a component or reads
//! a clock, and every order comes from agent names and `(key, id)`.

use crate::context::{Context, Frozen, View};
use crate::exec::{Execution, Executor, Interrupt};
use crate::job::{Asked, Checker, Member};
use crate::model::{Effect, Fact, Failure, FailureKind, InvariantClass, Proposal, Question};
use crate::names::{self, shown, truncate};
use crate::report::{
    AgentTrace, ConflictDetail, CycleTrace, Diagnostic, DiagnosticKind, ErrorInfo, InvariantTrace, Outcome,
    ProposalTrace, Reason, Stats, Status, ToolCall, ToolOutcome, Version,
};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Longest diagnostic message kept, in bytes.
const MAX_MESSAGE: usize = 4096;

/// Everything a job changes as it runs.
pub(crate) struct State {
    pub(crate) frozen: Arc<Frozen>,
    pub(crate) budget: crate::spec::Budget,
    pub(crate) min_confidence: f64,
    pub(crate) status: Status,
    pub(crate) reason: Option<Reason>,
    pub(crate) error: Option<ErrorInfo>,
    pub(crate) cycle: u32,
    pub(crate) dirty: BTreeSet<String>,
    pub(crate) questions: BTreeMap<String, Asked>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) trace: Vec<CycleTrace>,
    pub(crate) stats: Stats,
    pub(crate) deterministic: bool,
    pub(crate) engine: Arc<str>,
    pub(crate) human: Arc<str>,
    /// The host's id of the job, for the spans only (`converge.job_id`); never in a result or a hash.
    pub(crate) id: Arc<str>,
}

/// What one cycle's merge has done so far.
pub(crate) struct Merge {
    /// Ids inserted, per key, in merge order: pushing is cheaper than a set insert per fact, and the context
    /// sorts them once when it takes them (`set_added`).
    pub(crate) added: BTreeMap<String, Vec<String>>,
    /// Per applied effect with proposals: its index in the trace, the agent, the proposals.
    pub(crate) proposals: Vec<(usize, Arc<str>, Vec<Proposal>)>,
    pub(crate) trace: CycleTrace,
}

impl Merge {
    pub(crate) fn new(cycle: u32) -> Self {
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
    pub(crate) fn context(&mut self) -> &mut Context {
        &mut Arc::make_mut(&mut self.frozen).context
    }

    fn presence(&self, key: &str, id: &str, content: &str) -> Presence<'_> {
        match self.frozen.context.lookup(key, id) {
            None => Presence::New,
            Some(e) if e.content == content => Presence::Same,
            Some(e) => Presence::Conflict(e),
        }
    }

    pub(crate) fn room_for(&self, n: usize) -> bool {
        (self.frozen.context.len() as u64).saturating_add(n as u64) <= self.budget.max_facts
    }

    pub(crate) fn finish(&mut self, status: Status, kind: &str, message: String) {
        if !self.status.is_terminal() {
            self.status = status;
            self.error = Some(ErrorInfo { kind: kind.to_owned(), message });
        }
    }

    pub(crate) fn exhaust(&mut self, reason: Reason, message: String) {
        if !self.status.is_terminal() {
            self.reason = Some(reason);
            if reason == Reason::JobTimeout {
                self.deterministic = false;
            }
            self.finish(Status::BudgetExhausted, reason.as_str(), message);
        }
    }

    pub(crate) fn interrupt(&mut self, why: Interrupt) {
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

    pub(crate) fn count_tools(&mut self, calls: &[ToolCall]) {
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

    pub(crate) fn merge_effect(&mut self, member: &Member, run: Execution, m: &mut Merge) {
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
    pub(crate) fn merge_proposals(&mut self, m: &mut Merge) {
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
    pub(crate) fn apply_answers(&mut self, m: &mut Merge) {
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
    pub(crate) fn check<E: Executor>(
        &mut self,
        checkers: &[Checker],
        class: InvariantClass,
        executor: &E,
        m: &mut Merge,
    ) {
        let chosen: Vec<&Checker> = checkers.iter().filter(|c| c.class == class).collect();
        if chosen.is_empty() || self.status.is_terminal() {
            return;
        }
        let view = View(Arc::clone(&self.frozen));
        // The calls run on the executor's threads: each span names its parent (the cycle's) explicitly.
        let parent = tracing::Span::current();
        let (id, cycle) = (&*self.id, self.cycle);
        let verdicts = executor.map(chosen.len(), &|i| {
            let span = tracing::debug_span!(
                parent: &parent,
                "invariant",
                converge.job_id = id,
                converge.invariant = %chosen[i].name,
                converge.cycle = i64::from(cycle),
                converge.outcome = tracing::field::Empty,
            );
            let _enter = span.enter();
            let verdict = catch_unwind(AssertUnwindSafe(|| chosen[i].invariant.check(&view)))
                .unwrap_or_else(|_| Err(Failure::trap("the invariant panicked")));
            match &verdict {
                Ok(()) => span.record("converge.outcome", "held"),
                Err(f) if f.kind == FailureKind::Refused => span.record("converge.outcome", "violated"),
                Err(f) => span.record("converge.outcome", f.kind.as_str()),
            };
            verdict
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
