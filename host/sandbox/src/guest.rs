//! Components as the three worlds see them: linked and type-checked once ([`AgentPre`], [`InvariantPre`],
//! [`ToolPre`]), then called, each call in a fresh store. The WIT records are turned into the engine's types
//! here, so nothing above this crate sees a binding.

use crate::bindings::agent::ConvergeAgentPre;
use crate::bindings::invariant::ConvergeInvariantPre;
use crate::bindings::tool::ConvergeToolPre;
use crate::bindings::types;
use crate::call::{CallOutcome, CallSetup, State};
use crate::context::ViewHandle;
use crate::engine::Sandbox;
use crate::limits::Limits;
use converge_engine::{AgentInfo, Effect, Fact, InvariantClass, InvariantInfo, Proposal, Question, View};
use wasmtime::component::{Component, Resource};

/// Why a compiled component cannot be used as the world it exports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// An import is not satisfied by the host's linker.
    #[error("does not link: {0}")]
    Link(String),
    /// The export exists with another type than the WIT contract's.
    #[error("exports {world} with the wrong type: {message}")]
    WrongType {
        /// The world (`converge-agent`, ...).
        world: &'static str,
        /// What wasmtime said.
        message: String,
    },
}

/// An agent component, linked: instantiating it is the per-call cost.
#[derive(Clone)]
pub struct AgentPre(ConvergeAgentPre<State>);

/// An invariant component, linked.
#[derive(Clone)]
pub struct InvariantPre(ConvergeInvariantPre<State>);

/// A tool component, linked.
#[derive(Clone)]
pub struct ToolPre(ConvergeToolPre<State>);

impl ToolPre {
    /// The compiled component (to keep it in the cache).
    pub fn component(&self) -> &Component {
        self.0.instance_pre().component()
    }
}

fn message(e: &wasmtime::Error) -> String {
    crate::first_line(&format!("{e:#}")).to_owned()
}

impl Sandbox {
    /// The names of everything `component` imports, in its order.
    pub fn imports(&self, component: &Component) -> Vec<String> {
        component.component_type().imports(&self.engine).map(|(n, _)| n.to_owned()).collect()
    }

    /// The names of everything `component` exports, in its order.
    pub fn exports(&self, component: &Component) -> Vec<String> {
        component.component_type().exports(&self.engine).map(|(n, _)| n.to_owned()).collect()
    }

    /// Link `component` as an agent.
    ///
    /// # Errors
    /// An import the host does not serve, or an `agent` export of the wrong type.
    pub fn link_agent(&self, component: &Component) -> Result<AgentPre, LinkError> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| LinkError::Link(message(&e)))?;
        ConvergeAgentPre::new(pre)
            .map(AgentPre)
            .map_err(|e| LinkError::WrongType { world: "converge-agent", message: message(&e) })
    }

    /// Link `component` as an invariant.
    ///
    /// # Errors
    /// An import the host does not serve, or an `invariant` export of the wrong type.
    pub fn link_invariant(&self, component: &Component) -> Result<InvariantPre, LinkError> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| LinkError::Link(message(&e)))?;
        ConvergeInvariantPre::new(pre)
            .map(InvariantPre)
            .map_err(|e| LinkError::WrongType { world: "converge-invariant", message: message(&e) })
    }

    /// Link `component` as a tool.
    ///
    /// # Errors
    /// An import the host does not serve, or a `tool` export of the wrong type.
    pub fn link_tool(&self, component: &Component) -> Result<ToolPre, LinkError> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| LinkError::Link(message(&e)))?;
        ConvergeToolPre::new(pre)
            .map(ToolPre)
            .map_err(|e| LinkError::WrongType { world: "converge-tool", message: message(&e) })
    }

    /// Call an agent's `info()` under `limits`.
    pub fn agent_info(&self, pre: &AgentPre, limits: &Limits) -> CallOutcome<AgentInfo> {
        let out = self.call(limits, CallSetup::default(), |store| {
            let instance = pre.0.instantiate(&mut *store)?;
            instance.converge_agent_agent().call_info(&mut *store)
        });
        map(out, |i| {
            let types::AgentInfo { name, description, reads, writes, tools, required } = i;
            AgentInfo { name, description, reads, writes, tools, required }
        })
    }

    /// Call an agent's `execute(view)` in a fresh store: its effect, or the `err` it returned.
    pub fn execute(
        &self,
        pre: &AgentPre,
        limits: &Limits,
        setup: CallSetup,
        view: &View,
    ) -> CallOutcome<Result<Effect, String>> {
        let out = self.call(limits, setup, |store| {
            let instance = pre.0.instantiate(&mut *store)?;
            let handle = store.data_mut().table_push(ViewHandle(view.clone()))?;
            let borrowed = Resource::new_borrow(handle.rep());
            instance.converge_agent_agent().call_execute(&mut *store, borrowed)
        });
        map(out, |r| r.map(effect_from))
    }

    /// Call an invariant's `info()` under `limits`.
    pub fn invariant_info(&self, pre: &InvariantPre, limits: &Limits) -> CallOutcome<InvariantInfo> {
        let out = self.call(limits, CallSetup::default(), |store| {
            let instance = pre.0.instantiate(&mut *store)?;
            instance.converge_agent_invariant().call_info(&mut *store)
        });
        map(out, |info| {
            let class = match info.class {
                types::InvariantClass::Structural => InvariantClass::Structural,
                types::InvariantClass::Semantic => InvariantClass::Semantic,
                types::InvariantClass::Acceptance => InvariantClass::Acceptance,
            };
            InvariantInfo { name: info.name, description: info.description, class }
        })
    }

    /// Call an invariant's `check(view)` in a fresh store: `Ok`, or the violation it returned.
    pub fn check(
        &self,
        pre: &InvariantPre,
        limits: &Limits,
        setup: CallSetup,
        view: &View,
    ) -> CallOutcome<Result<(), String>> {
        self.call(limits, setup, |store| {
            let instance = pre.0.instantiate(&mut *store)?;
            let handle = store.data_mut().table_push(ViewHandle(view.clone()))?;
            let borrowed = Resource::new_borrow(handle.rep());
            instance.converge_agent_invariant().call_check(&mut *store, borrowed)
        })
    }

    /// Call a tool's `info()` under `limits`: its name and description.
    pub fn tool_info(&self, pre: &ToolPre, limits: &Limits) -> CallOutcome<(String, String)> {
        let out = self.call(limits, CallSetup::default(), |store| {
            let instance = pre.0.instantiate(&mut *store)?;
            instance.converge_agent_tool().call_info(&mut *store)
        });
        map(out, |i| (i.name, i.description))
    }

    /// Call a tool's `invoke(input)` in a fresh store whose RNGs are seeded with `seed`: its output, or the
    /// `err` it returned.
    pub fn invoke(
        &self,
        pre: &ToolPre,
        limits: &Limits,
        seed: [u8; 32],
        input: &str,
    ) -> CallOutcome<Result<String, String>> {
        self.call(limits, CallSetup { seed, tools: None }, |store| {
            let instance = pre.0.instantiate(&mut *store)?;
            instance.converge_agent_tool().call_invoke(&mut *store, input)
        })
    }
}

fn map<A, B>(out: CallOutcome<A>, f: impl FnOnce(A) -> B) -> CallOutcome<B> {
    let CallOutcome { result, fuel, memory, logs, elapsed, attempts, tools } = out;
    CallOutcome { result: result.map(f), fuel, memory, logs, elapsed, attempts, tools }
}

fn fact_from(f: types::Fact) -> Fact {
    Fact { key: f.key, id: f.id, content: f.content }
}

fn effect_from(e: types::Effect) -> Effect {
    Effect {
        facts: e.facts.into_iter().map(fact_from).collect(),
        proposals: e
            .proposals
            .into_iter()
            .map(|p| Proposal { fact: fact_from(p.fact), confidence: p.confidence, rationale: p.rationale })
            .collect(),
        questions: e.questions.into_iter().map(|q| Question { id: q.id, prompt: q.prompt }).collect(),
    }
}
