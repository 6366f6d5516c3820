//! Native agents and invariants driven by a small script, so tests (and data-driven cases) can describe
//! behaviour as data. Each is a pure function of the view: the same context gives the same effect.

use converge_engine::{
    Agent, AgentInfo, Effect, Execution, Fact, Failure, Invariant, InvariantClass, InvariantInfo, Job, JobSpec,
    NoInterrupt, Proposal, RayonExecutor, SerialExecutor, View,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// For each fact added under `from`, write one under `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    pub from: String,
    pub to: String,
    /// Appended to the content.
    #[serde(default)]
    pub suffix: String,
    /// Appended to the id; the copy is skipped once the id would pass `max_id_len`.
    #[serde(default)]
    pub id_suffix: String,
    #[serde(default = "default_max_id")]
    pub max_id_len: usize,
    /// If set, the copies are proposals with this confidence.
    #[serde(default)]
    pub confidence: Option<f64>,
}

fn default_max_id() -> usize {
    256
}

/// An agent described as data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub name: String,
    #[serde(default)]
    pub reads: Vec<String>,
    #[serde(default)]
    pub writes: Vec<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub copy: Vec<Copy>,
    /// The effect to return in a given cycle (in addition to copies).
    #[serde(default)]
    pub emit: BTreeMap<u32, Effect>,
    /// The effect to return in every cycle it runs.
    #[serde(default)]
    pub always: Option<Effect>,
    /// Fail in a given cycle instead.
    #[serde(default)]
    pub fail: BTreeMap<u32, Failure>,
}

impl Script {
    pub fn new(name: &str, reads: &[&str], writes: &[&str]) -> Self {
        Self {
            name: name.into(),
            reads: reads.iter().map(|s| (*s).to_owned()).collect(),
            writes: writes.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::default()
        }
    }

    pub fn copy(mut self, from: &str, to: &str, suffix: &str) -> Self {
        self.copy.push(Copy {
            from: from.into(),
            to: to.into(),
            suffix: suffix.into(),
            id_suffix: String::new(),
            max_id_len: 256,
            confidence: None,
        });
        self
    }

    pub fn emit(mut self, cycle: u32, effect: Effect) -> Self {
        self.emit.insert(cycle, effect);
        self
    }

    pub fn always(mut self, effect: Effect) -> Self {
        self.always = Some(effect);
        self
    }

    pub fn fail(mut self, cycle: u32, failure: Failure) -> Self {
        self.fail.insert(cycle, failure);
        self
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn build(self) -> Arc<dyn Agent> {
        Arc::new(ScriptAgent::new(self))
    }
}

/// Every execution a [`ScriptAgent`] made: `(cycle, agent, what it returned)`.
pub type Log = Arc<Mutex<Vec<(u32, String, Result<Effect, Failure>)>>>;

pub struct ScriptAgent {
    info: AgentInfo,
    script: Script,
    log: Option<Log>,
}

impl ScriptAgent {
    pub fn new(script: Script) -> Self {
        let info = AgentInfo {
            name: script.name.clone(),
            description: "scripted test agent".into(),
            reads: script.reads.clone(),
            writes: script.writes.clone(),
            tools: Vec::new(),
            required: script.required,
        };
        Self { info, script, log: None }
    }

    pub fn logged(script: Script, log: &Log) -> Arc<dyn Agent> {
        let mut agent = Self::new(script);
        agent.log = Some(Arc::clone(log));
        Arc::new(agent)
    }

    fn effect(&self, view: &View) -> Result<Effect, Failure> {
        let cycle = view.cycle();
        if let Some(f) = self.script.fail.get(&cycle) {
            return Err(f.clone());
        }
        let mut effect = self.script.emit.get(&cycle).cloned().unwrap_or_default();
        if let Some(always) = &self.script.always {
            effect.facts.extend(always.facts.iter().cloned());
            effect.proposals.extend(always.proposals.iter().cloned());
            effect.questions.extend(always.questions.iter().cloned());
        }
        for c in &self.script.copy {
            for f in view.added(&c.from) {
                let id = format!("{}{}", f.id, c.id_suffix);
                if id.len() > c.max_id_len {
                    continue;
                }
                let fact = Fact::new(&c.to, id, format!("{}{}", f.content, c.suffix));
                match c.confidence {
                    Some(confidence) => {
                        effect.proposals.push(Proposal { fact, confidence, rationale: "copied".into() });
                    }
                    None => effect.facts.push(fact),
                }
            }
        }
        Ok(effect)
    }
}

impl Agent for ScriptAgent {
    fn info(&self) -> &AgentInfo {
        &self.info
    }

    fn execute(&self, view: &View) -> Execution {
        let result = self.effect(view);
        if let Some(log) = &self.log {
            log.lock().unwrap().push((view.cycle(), self.info.name.clone(), result.clone()));
        }
        result.into()
    }
}

/// An invariant described as data: violated when a key has fewer than `min` facts, or when a fact exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvariantScript {
    pub name: String,
    pub class: InvariantClass,
    /// `key -> min count`.
    #[serde(default)]
    pub require: BTreeMap<String, usize>,
    /// `key -> count` that must not be reached.
    #[serde(default)]
    pub below: BTreeMap<String, usize>,
    /// Facts that must not exist, as `[key, id]`.
    #[serde(default)]
    pub forbid: Vec<(String, String)>,
}

impl InvariantScript {
    pub fn build(self) -> Arc<dyn Invariant> {
        let info = InvariantInfo { name: self.name.clone(), description: "scripted".into(), class: self.class };
        Arc::new(ScriptInvariant { info, script: self })
    }
}

pub struct ScriptInvariant {
    info: InvariantInfo,
    script: InvariantScript,
}

impl Invariant for ScriptInvariant {
    fn info(&self) -> &InvariantInfo {
        &self.info
    }

    fn check(&self, view: &View) -> Result<(), Failure> {
        for (key, min) in &self.script.require {
            if view.count(key) < *min {
                return Err(Failure::refused(format!("{key} has {} facts, fewer than {min}", view.count(key))));
            }
        }
        for (key, max) in &self.script.below {
            if view.count(key) >= *max {
                return Err(Failure::refused(format!("{key} reached {max} facts")));
            }
        }
        for (key, id) in &self.script.forbid {
            if view.get(key, id).is_some() {
                return Err(Failure::refused(format!("({key}, {id}) must not exist")));
            }
        }
        Ok(())
    }
}

/// A rayon pool with `n` threads, built once per `n` for the whole test binary.
pub fn rayon(n: usize) -> RayonExecutor {
    static POOLS: OnceLock<Mutex<BTreeMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut pools = pools.lock().unwrap();
    let pool =
        pools.entry(n).or_insert_with(|| Arc::new(rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()));
    RayonExecutor::new(Arc::clone(pool))
}

/// Build and run a job to its end (or to waiting) on one thread.
pub fn run(spec: &JobSpec, agents: &[Arc<dyn Agent>], invariants: &[Arc<dyn Invariant>]) -> Job {
    let mut job = Job::new(spec, agents, invariants).unwrap();
    job.run(&SerialExecutor, &NoInterrupt);
    job
}

pub fn spec_with(facts: &[(&str, &str, &str)]) -> JobSpec {
    let mut spec = JobSpec::new("test");
    spec.facts = facts.iter().map(|(k, i, c)| Fact::new(*k, *i, *c)).collect();
    spec
}

pub fn facts(list: &[(&str, &str, &str)]) -> Effect {
    Effect { facts: list.iter().map(|(k, i, c)| Fact::new(*k, *i, *c)).collect(), ..Effect::default() }
}
