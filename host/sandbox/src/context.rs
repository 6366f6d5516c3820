//! The `converge:agent/context` capability: the `view` resource over the engine's frozen snapshot of the cycle
//! (an `Arc`, never a copy of the context). Every method charges hostcall fuel for what it hands out before it
//! copies anything, so an agent pays for what it reads, not for the size of the context.

use crate::bindings::{context, types};
use crate::call::State;
use converge_engine::View;
use wasmtime::component::Resource;

/// The `view` resource: the engine's frozen snapshot of the cycle (an `Arc`, never a copy of the context).
pub struct ViewHandle(pub View);

impl types::Host for State {}

impl context::Host for State {}

fn to_wit(f: &converge_engine::FactRef<'_>) -> types::Fact {
    types::Fact { key: f.key.to_owned(), id: f.id.to_owned(), content: f.content.to_owned() }
}

fn size(f: &converge_engine::FactRef<'_>) -> usize {
    f.key.len() + f.id.len() + f.content.len()
}

impl context::HostView for State {
    fn cycle(&mut self, v: Resource<ViewHandle>) -> wasmtime::Result<u32> {
        self.charge(0)?;
        Ok(self.table.get(&v)?.0.cycle())
    }

    fn goal(&mut self, v: Resource<ViewHandle>) -> wasmtime::Result<String> {
        let view = self.table.get(&v)?.0.clone();
        self.charge(view.goal().len())?;
        Ok(view.goal().to_owned())
    }

    fn get(&mut self, v: Resource<ViewHandle>, key: String, id: String) -> wasmtime::Result<Option<types::Fact>> {
        let view = self.table.get(&v)?.0.clone();
        let found = view.get(&key, &id);
        self.charge(key.len() + id.len() + found.as_ref().map_or(0, size))?;
        Ok(found.as_ref().map(to_wit))
    }

    fn facts(&mut self, v: Resource<ViewHandle>, key: String) -> wasmtime::Result<Vec<types::Fact>> {
        let view = self.table.get(&v)?.0.clone();
        // Charge before copying, so a guest cannot make the host build what it cannot pay for.
        self.charge(key.len() + view.facts(&key).map(|f| size(&f)).sum::<usize>())?;
        Ok(view.facts(&key).map(|f| to_wit(&f)).collect())
    }

    fn added(&mut self, v: Resource<ViewHandle>, key: String) -> wasmtime::Result<Vec<types::Fact>> {
        let view = self.table.get(&v)?.0.clone();
        self.charge(key.len() + view.added(&key).map(|f| size(&f)).sum::<usize>())?;
        Ok(view.added(&key).map(|f| to_wit(&f)).collect())
    }

    fn count(&mut self, v: Resource<ViewHandle>, key: String) -> wasmtime::Result<u32> {
        self.charge(key.len())?;
        Ok(u32::try_from(self.table.get(&v)?.0.count(&key)).unwrap_or(u32::MAX))
    }

    fn keys(&mut self, v: Resource<ViewHandle>) -> wasmtime::Result<Vec<String>> {
        let view = self.table.get(&v)?.0.clone();
        self.charge(view.keys().map(str::len).sum())?;
        Ok(view.keys().map(str::to_owned).collect())
    }

    fn drop(&mut self, v: Resource<ViewHandle>) -> wasmtime::Result<()> {
        self.table.delete(v)?;
        Ok(())
    }
}
