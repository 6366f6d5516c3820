//! The floor of `call/floor`: the reader guest instantiated and called by wasmtime with nothing but its own
//! imports — WASI as `wasmtime-wasi` gives it by default and the `converge:agent` interfaces answered directly —
//! on an engine without fuel, epochs or NaN canonicalisation, pooled and reset the fast way as the sandbox's is.
//! What `call/sandboxed` costs beyond it is the price of the sandbox: metering in the compiled code, limits,
//! the deterministic WASI, captured output, classification and the engine's wrapper.

use converge_engine::View;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        world: "converge-agent",
        path: "../wit",
        with: { "converge:agent/context.view": super::FloorView },
    });
}

use bindings::converge::agent::{context, log, tools, types};

/// The view resource: the engine's snapshot, as the sandbox's is.
pub struct FloorView(View);

/// A store's data: WASI and the resource table, nothing else.
pub struct Floor {
    table: ResourceTable,
    wasi: WasiCtx,
}

impl WasiView for Floor {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for Floor {}
impl context::Host for Floor {}

fn wit(f: &converge_engine::FactRef<'_>) -> types::Fact {
    types::Fact { key: f.key.to_owned(), id: f.id.to_owned(), content: f.content.to_owned() }
}

impl context::HostView for Floor {
    fn cycle(&mut self, v: Resource<FloorView>) -> u32 {
        self.table.get(&v).unwrap().0.cycle()
    }
    fn goal(&mut self, v: Resource<FloorView>) -> String {
        self.table.get(&v).unwrap().0.goal().to_owned()
    }
    fn get(&mut self, v: Resource<FloorView>, key: String, id: String) -> Option<types::Fact> {
        self.table.get(&v).unwrap().0.get(&key, &id).as_ref().map(wit)
    }
    fn facts(&mut self, v: Resource<FloorView>, key: String) -> Vec<types::Fact> {
        self.table.get(&v).unwrap().0.facts(&key).map(|f| wit(&f)).collect()
    }
    fn added(&mut self, v: Resource<FloorView>, key: String) -> Vec<types::Fact> {
        self.table.get(&v).unwrap().0.added(&key).map(|f| wit(&f)).collect()
    }
    fn count(&mut self, v: Resource<FloorView>, key: String) -> u32 {
        u32::try_from(self.table.get(&v).unwrap().0.count(&key)).unwrap()
    }
    fn keys(&mut self, v: Resource<FloorView>) -> Vec<String> {
        self.table.get(&v).unwrap().0.keys().map(str::to_owned).collect()
    }
    fn drop(&mut self, v: Resource<FloorView>) -> wasmtime::Result<()> {
        self.table.delete(v)?;
        Ok(())
    }
}

impl tools::Host for Floor {
    fn invoke(&mut self, name: String, _input: String) -> Result<String, types::ToolError> {
        Err(types::ToolError::Denied(name))
    }
}

impl log::Host for Floor {
    fn log(&mut self, _level: types::Level, _message: String) {}
}

/// The reader, linked on a bare engine.
pub struct FloorGuest {
    engine: Engine,
    pre: bindings::ConvergeAgentPre<Floor>,
}

impl FloorGuest {
    pub fn new(component: &[u8]) -> Self {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(8)
            .total_core_instances(256)
            .total_memories(32)
            .total_tables(64)
            .total_stacks(8)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .linear_memory_keep_resident(8 * 1024 * 1024)
            .table_keep_resident(4 * 1024 * 1024)
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, component).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        bindings::ConvergeAgent::add_to_linker::<Floor, HasSelf<Floor>>(&mut linker, |s| s).unwrap();
        let pre = bindings::ConvergeAgentPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        Self { engine, pre }
    }

    /// One fresh call: a store, an instance, `execute(view)`, the drop. Returns how many facts came back.
    pub fn execute(&self, view: &View) -> usize {
        let mut store =
            Store::new(&self.engine, Floor { table: ResourceTable::new(), wasi: WasiCtx::builder().build() });
        let instance = self.pre.instantiate(&mut store).unwrap();
        let handle = store.data_mut().table.push(FloorView(view.clone())).unwrap();
        let borrowed = Resource::new_borrow(handle.rep());
        let effect = instance.converge_agent_agent().call_execute(&mut store, borrowed).unwrap().unwrap();
        effect.facts.len()
    }
}
