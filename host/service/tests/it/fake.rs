//! A fake runtime: native agents behind the service's `Runtime` port, and a tool validation decided by the
//! manifest's description. What the service tests run jobs on, with no WebAssembly built.

use converge_engine::{Agent, AgentInfo, Effect, Execution, Fact, JobSpec, Question, View};
use converge_service::{AgentEntry, Component, Inventory, Roster, Runtime, RuntimeError};
use converge_store::{Manifest, Report, ToolLimits, ToolRecord, Verdict};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writes `out/<id>` for each seed `in/<id>`.
pub struct Copier(AgentInfo);

impl Agent for Copier {
    fn info(&self) -> &AgentInfo {
        &self.0
    }

    fn execute(&self, view: &View) -> Execution {
        let facts = view.added("in").map(|f| Fact::new("out", f.id, f.content)).collect();
        Effect { facts, ..Effect::default() }.into()
    }
}

/// Asks `choice` in cycle 1; once answered, writes `decision/final` with the answer.
pub struct Asker(AgentInfo);

impl Agent for Asker {
    fn info(&self) -> &AgentInfo {
        &self.0
    }

    fn execute(&self, view: &View) -> Execution {
        if let Some(a) = view.get("answers", "choice") {
            return Effect { facts: vec![Fact::new("decision", "final", a.content)], ..Effect::default() }.into();
        }
        Effect {
            questions: vec![Question { id: "choice".into(), prompt: "left or right?".into() }],
            ..Effect::default()
        }
        .into()
    }
}

/// Counts: writes `count/<n+1>` after `count/<n>` up to `count/40`, taking 25 ms of wall time per call (a job
/// that runs for about a second, to be caught mid-run).
pub struct Counter(AgentInfo);

impl Agent for Counter {
    fn info(&self) -> &AgentInfo {
        &self.0
    }

    fn execute(&self, view: &View) -> Execution {
        std::thread::sleep(Duration::from_millis(25));
        let n = view.count("count");
        if n >= 40 {
            return Effect::default().into();
        }
        Effect { facts: vec![Fact::new("count", format!("{:03}", n + 1), "tick")], ..Effect::default() }.into()
    }
}

/// The runtime port over native agents; a tool "validates" by its manifest's description.
pub struct Fake {
    agents: Vec<Arc<dyn Agent>>,
    callable: Mutex<BTreeSet<(String, String)>>,
}

impl Fake {
    pub fn new() -> Self {
        let info = |name: &str, reads: &[&str], writes: &[&str]| AgentInfo {
            name: name.into(),
            reads: reads.iter().map(|s| (*s).to_owned()).collect(),
            writes: writes.iter().map(|s| (*s).to_owned()).collect(),
            ..AgentInfo::default()
        };
        let agents: Vec<Arc<dyn Agent>> = vec![
            Arc::new(Copier(info("copier", &["in"], &["out"]))),
            Arc::new(Asker(info("asker", &["answers"], &["decision"]))),
            Arc::new(Counter(info("counter", &["count"], &["count"]))),
        ];
        Self { agents, callable: Mutex::default() }
    }
}

impl Runtime for Fake {
    fn refresh(&self) -> Result<Arc<Inventory>, RuntimeError> {
        Ok(self.inventory())
    }

    fn inventory(&self) -> Arc<Inventory> {
        let agents = self
            .agents
            .iter()
            .map(|a| AgentEntry {
                component: Component {
                    name: a.info().name.clone(),
                    file: format!("{}.wasm", a.info().name),
                    digest: format!("digest-of-{}", a.info().name),
                    size: 1,
                },
                info: a.info().clone(),
            })
            .collect();
        Arc::new(Inventory { agents, ..Inventory::default() })
    }

    fn roster(&self, _spec: &JobSpec, _tenant: &str, _id: &str) -> Roster {
        (self.agents.clone(), Vec::new())
    }

    fn validate(&self, bytes: &[u8], manifest: &Manifest) -> Report {
        let verdict = match manifest.description.as_str() {
            "good" => Verdict::Accepted,
            "shaky" => Verdict::NeedsReview,
            _ => Verdict::Rejected,
        };
        Report {
            verdict,
            reasons: if verdict == Verdict::Accepted { Vec::new() } else { vec![manifest.description.clone()] },
            name: manifest.name.clone(),
            description: manifest.description.clone(),
            digest: format!("{:0>64}", bytes.len()),
            size: bytes.len() as u64,
            imports: Vec::new(),
            attempts: Vec::new(),
            tests: Vec::new(),
            limits: ToolLimits::default(),
            requested: Vec::new(),
        }
    }

    fn activate(&self, record: &ToolRecord, _bytes: &[u8]) -> Result<(), RuntimeError> {
        self.callable.lock().unwrap().insert((record.tenant.clone(), record.pinned()));
        Ok(())
    }

    fn deactivate(&self, tenant: &str, digest: &str) {
        self.callable.lock().unwrap().retain(|(t, pinned)| t != tenant || !pinned.ends_with(digest));
    }

    fn callable(&self, tenant: &str, name: &str) -> bool {
        self.callable.lock().unwrap().iter().any(|(t, pinned)| t == tenant && pinned == name)
    }
}
