//! Loaded components as the engine's [`Agent`] and [`Invariant`], bound to one job's limits and RNG seed.

use crate::registry::{Catalog, Loaded, Loadout};
use crate::tools::{Circuits, ToolSession, ToolSet};
use converge_engine::{Agent, AgentInfo, Execution, Failure, Invariant, InvariantInfo, JobSpec, View};
use converge_sandbox::{CallSetup, Limits, Sandbox, ToolHost, call_seed, clip};
use converge_service::Roster;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Longest `err(..)` message kept from a guest.
const MAX_REFUSAL: usize = 4096;

/// The seed of a job's guest RNGs: SHA-256 over the spec without its labels (which agents do not see), so the
/// same job gets the same random numbers every time it runs.
pub fn job_seed(spec: &JobSpec) -> [u8; 32] {
    let mut spec = spec.clone();
    spec.labels.clear();
    let mut h = Sha256::new();
    h.update(b"converge-job-v1\0");
    h.update(serde_json::to_vec(&spec).unwrap_or_default());
    h.finalize().into()
}

/// A loaded agent bound to one job's limits and seed.
struct SandboxAgent {
    job: Arc<str>,
    loaded: Arc<Loaded>,
    info: AgentInfo,
    sandbox: Arc<Sandbox>,
    limits: Limits,
    seed: [u8; 32],
    tools: Arc<ToolSet>,
    circuits: Arc<Circuits>,
}

impl Agent for SandboxAgent {
    fn info(&self) -> &AgentInfo {
        &self.info
    }

    fn execute(&self, view: &View) -> Execution {
        let Loadout::Agent { pre, .. } = &self.loaded.component else {
            return Failure::trap("not an agent").into();
        };
        let seed = call_seed(&self.seed, &self.info.name, view.cycle());
        let tools = (!self.info.tools.is_empty()).then(|| {
            Box::new(ToolSession::new(
                Arc::clone(&self.job),
                Arc::clone(&self.sandbox),
                Arc::clone(&self.tools),
                Arc::clone(&self.circuits),
                self.info.tools.clone(),
                self.info.name.clone(),
                view.cycle(),
                seed,
            )) as Box<dyn ToolHost>
        });
        let out = self.sandbox.execute(pre, &self.limits, CallSetup { seed, tools }, view);
        let time_us = out.time_us();
        let result = match out.result {
            Ok(Ok(effect)) => Ok(effect),
            Ok(Err(message)) => Err(Failure::refused(clip(&message, MAX_REFUSAL))),
            Err(failure) => Err(failure),
        };
        let mut logs = out.logs;
        logs.extend(out.attempts.into_iter().map(|a| format!("refused: {a}")));
        Execution { result, fuel: out.fuel, memory: out.memory, logs, time_us, tools: out.tools }
    }
}

/// A loaded invariant bound to one job's limits and seed.
struct SandboxInvariant {
    loaded: Arc<Loaded>,
    info: InvariantInfo,
    sandbox: Arc<Sandbox>,
    limits: Limits,
    seed: [u8; 32],
}

impl Invariant for SandboxInvariant {
    fn info(&self) -> &InvariantInfo {
        &self.info
    }

    fn check(&self, view: &View) -> Result<(), Failure> {
        let Loadout::Invariant { pre, .. } = &self.loaded.component else {
            return Err(Failure::trap("not an invariant"));
        };
        let setup = CallSetup { seed: call_seed(&self.seed, &self.info.name, view.cycle()), tools: None };
        match self.sandbox.check(pre, &self.limits, setup, view).result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Failure::refused(clip(&message, MAX_REFUSAL))),
            Err(failure) => Err(failure),
        }
    }
}

/// Every loaded agent and invariant of `catalog`, bound to `spec`'s limits and seed (and to job `id` in the
/// logs), calling the tools of `catalog`. The engine picks the ones the spec names (and rejects names that are
/// not loaded).
pub fn roster(catalog: &Catalog, sandbox: &Arc<Sandbox>, spec: &JobSpec, id: &str) -> Roster {
    roster_with_tools(catalog, &catalog.tools, sandbox, spec, id)
}

/// [`roster`], with the agents calling `tools` (a job gets its tenant's view of the tools).
pub fn roster_with_tools(
    catalog: &Catalog,
    tools: &Arc<ToolSet>,
    sandbox: &Arc<Sandbox>,
    spec: &JobSpec,
    id: &str,
) -> Roster {
    let limits = Limits::from_budget(&spec.budget);
    let seed = job_seed(spec);
    let job: Arc<str> = Arc::from(id);
    let circuits = Arc::new(Circuits::default());
    let agents = catalog
        .agents()
        .map(|(loaded, info)| {
            Arc::new(SandboxAgent {
                job: Arc::clone(&job),
                loaded: Arc::clone(loaded),
                info: info.clone(),
                sandbox: Arc::clone(sandbox),
                limits,
                seed,
                tools: Arc::clone(tools),
                circuits: Arc::clone(&circuits),
            }) as Arc<dyn Agent>
        })
        .collect();
    let invariants = catalog
        .invariants()
        .map(|(loaded, info)| {
            Arc::new(SandboxInvariant {
                loaded: Arc::clone(loaded),
                info: info.clone(),
                sandbox: Arc::clone(sandbox),
                limits,
                seed,
            }) as Arc<dyn Invariant>
        })
        .collect();
    (agents, invariants)
}
