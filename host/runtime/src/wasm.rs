//! [`WasmRuntime`]: the registry and the validated tools behind the service's [`Runtime`] port.

use crate::registry::{Catalog, Registry};
use crate::roster::roster_with_tools;
use crate::tools::{Source, Tool, validate};
use converge_engine::JobSpec;
use converge_sandbox::{GUEST_STACK, Sandbox};
use converge_service::{Inventory, Roster, Runtime, RuntimeError};
use converge_store::{Manifest, Report, ToolRecord};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The wasmtime runtime: the agents and tools directories, the validated tools, one sandbox.
pub struct WasmRuntime {
    sandbox: Arc<Sandbox>,
    registry: Mutex<Registry>,
    /// What is loaded now: the live components, and the same as data.
    now: RwLock<(Arc<Catalog>, Arc<Inventory>)>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// The runtime over `registry` (nothing is loaded until [`Runtime::refresh`]).
    pub fn new(registry: Registry) -> Self {
        let sandbox = Arc::clone(registry.sandbox());
        let empty = Catalog::default();
        let inventory = Arc::new(empty.inventory());
        Self { sandbox, registry: Mutex::new(registry), now: RwLock::new((Arc::new(empty), inventory)) }
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The live components loaded now.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.now.read().unwrap_or_else(PoisonError::into_inner).0)
    }

    fn publish(&self, catalog: Catalog) -> Arc<Inventory> {
        let inventory = Arc::new(catalog.inventory());
        *self.now.write().unwrap_or_else(PoisonError::into_inner) = (Arc::new(catalog), Arc::clone(&inventory));
        inventory
    }
}

impl Runtime for WasmRuntime {
    fn refresh(&self) -> Result<Arc<Inventory>, RuntimeError> {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let catalog = registry.refresh()?;
        Ok(self.publish(catalog))
    }

    fn inventory(&self) -> Arc<Inventory> {
        Arc::clone(&self.now.read().unwrap_or_else(PoisonError::into_inner).1)
    }

    fn roster(&self, spec: &JobSpec, tenant: &str, id: &str) -> Roster {
        let catalog = self.catalog();
        // The job calls the trusted tools and its own tenant's validated ones, never another tenant's.
        let tools = if catalog.tools.has_validated() {
            Arc::new(catalog.tools.for_tenant(tenant))
        } else {
            Arc::clone(&catalog.tools)
        };
        roster_with_tools(&catalog, &tools, &self.sandbox, spec, id)
    }

    fn validate(&self, bytes: &[u8], manifest: &Manifest) -> Report {
        // The cache is cloned out of the lock: validation compiles and runs tests for a while.
        let cache = self.registry.lock().unwrap_or_else(PoisonError::into_inner).cache().cloned();
        validate(&self.sandbox, cache.as_ref(), bytes, manifest).report
    }

    fn activate(&self, record: &ToolRecord, bytes: &[u8]) -> Result<(), RuntimeError> {
        let failed = |message: String| RuntimeError { context: format!("loading tool {}", record.pinned()), message };
        if converge_engine::hex(&Sha256::digest(bytes)) != record.digest {
            return Err(failed("the stored component does not match its digest".into()));
        }
        let cache = self.registry.lock().unwrap_or_else(PoisonError::into_inner).cache().cloned();
        let component =
            self.sandbox.compile_cached(cache.as_ref(), &record.digest, bytes).map_err(|e| failed(e.to_string()))?;
        let tool = Tool::link(
            &self.sandbox,
            &component,
            &record.digest,
            Source::Validated,
            Some(record.tenant.clone()),
            record.report.limits,
        )
        .map_err(|e| failed(e.to_string()))?;
        let catalog = self.registry.lock().unwrap_or_else(PoisonError::into_inner).add_validated(Arc::new(tool));
        self.publish(catalog);
        Ok(())
    }

    fn deactivate(&self, tenant: &str, digest: &str) {
        let catalog = self.registry.lock().unwrap_or_else(PoisonError::into_inner).remove_validated(tenant, digest);
        self.publish(catalog);
    }

    fn callable(&self, tenant: &str, name: &str) -> bool {
        self.catalog().tools.for_tenant(tenant).resolve(name).is_some()
    }

    fn stack_size(&self) -> usize {
        GUEST_STACK
    }
}
