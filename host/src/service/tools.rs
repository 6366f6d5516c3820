//! The service's side of tools: validated tools stored by digest, made callable when accepted or approved, and
//! loaded again at start.

use super::Service;
use crate::Sandbox;
use crate::cache::Cache;
use crate::store::{NewTool, Store, ToolRecord};
use crate::tools::validate::{Manifest, Report, Validated, validate};
use crate::tools::{Source, Tool, from_component};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use wasmtime::component::Component;

impl Service {
    /// Make every stored tool that is `accepted` callable again, in the order they were accepted. A tool that no
    /// longer compiles or links is skipped with a warning (it stays in the store).
    pub(super) fn load_validated_tools(&self) {
        let records = match self.store.tools(None) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the stored tools failed; none are callable");
                return;
            }
        };
        let mut accepted: Vec<ToolRecord> = records.into_iter().filter(|r| r.status == "accepted").collect();
        accepted.sort_by_key(|r| r.accepted_ms);
        for record in accepted {
            if let Err(why) = self.activate(&record) {
                tracing::warn!(tool = %record.name, digest = %record.digest, reason = %why, "stored tool not loaded");
            }
        }
    }

    /// Validate a submitted tool (blocking: compiles and runs its tests) and record the report. An accepted tool
    /// is callable when this returns.
    ///
    /// # Errors
    /// The store failed.
    pub fn validate_tool(
        &self,
        tenant: &str,
        bytes: &[u8],
        manifest: &Manifest,
    ) -> Result<(Report, ToolRecord), crate::store::StoreError> {
        let Validated { report, mut tool } = validate(&self.sandbox, bytes, manifest);
        if let Some(t) = &mut tool {
            t.owner = Some(tenant.to_owned());
        }
        let new = NewTool {
            digest: report.digest.clone(),
            name: report.name.clone(),
            tenant: tenant.to_owned(),
            verdict: report.verdict.as_str().to_owned(),
            manifest: serde_json::to_string(manifest).unwrap_or_default(),
            report: serde_json::to_string(&report).unwrap_or_default(),
            component: tool.as_ref().map(|_| bytes.to_vec()),
            now_ms: super::now_ms(),
        };
        let record = self.store.put_tool(new).blocking_recv().map_err(|_| crate::store::StoreError::Closed)??;
        // Its compiled code, so loading it at the next start (or on approval) does not compile it again.
        // (The cache is cloned out of the lock: serialising a large component takes a while.)
        let cache = self.registry.lock().ok().and_then(|r| r.cache().cloned());
        if let (Some(t), Some(cache)) = (&tool, cache) {
            cache.put(&t.digest, t.pre.instance_pre().component());
        }
        // The stored record decides (a resubmission with the same manifest keeps an earlier review's decision).
        if record.status == "accepted" {
            match tool.filter(|t| t.digest == record.digest) {
                Some(t) if record.manifest == serde_json::to_string(manifest).unwrap_or_default() => {
                    self.publish(Some(Arc::new(t)), &record);
                }
                _ => {
                    if let Err(why) = self.activate(&record) {
                        tracing::warn!(tool = %record.name, reason = %why, "accepted tool not loaded");
                    }
                }
            }
        } else {
            self.publish(None, &record);
        }
        Ok((report, record))
    }

    /// After a review or a change of status: make the tool callable if it is accepted, else not.
    pub fn sync_tool(&self, record: &ToolRecord) {
        if record.status == "accepted" {
            if let Err(why) = self.activate(record) {
                tracing::warn!(tool = %record.name, reason = %why, "approved tool not loaded");
            }
        } else {
            self.publish(None, record);
        }
    }

    /// Compile a stored tool from its component bytes and make it callable.
    fn activate(&self, record: &ToolRecord) -> Result<(), String> {
        let cache = self.registry.lock().map_err(|_| "the registry lock is poisoned")?.cache().cloned();
        let tool = load_stored(self.store.as_ref(), &self.sandbox, cache.as_ref(), record)?;
        self.publish(Some(Arc::new(tool)), record);
        Ok(())
    }

    /// Add (or remove, with `None`) the validated tool of `record` and rebuild the catalog.
    fn publish(&self, tool: Option<Arc<Tool>>, record: &ToolRecord) {
        if let Ok(mut registry) = self.registry.lock() {
            match tool {
                Some(t) => registry.add_validated(t),
                None => registry.remove_validated(&record.tenant, &record.digest),
            }
        }
        self.rescan();
    }
}

/// A stored tool, compiled (through `cache`, when given) from its stored component bytes, with the limits its
/// report granted: how `serve` makes validated tools callable and how `converge replay` gets the very tools a
/// job called.
///
/// # Errors
/// A sentence: the store failed, the component is not stored or does not match its digest, the report does not
/// parse, or the component no longer compiles or links.
pub fn load_stored(
    store: &dyn Store,
    sandbox: &Sandbox,
    cache: Option<&Cache>,
    record: &ToolRecord,
) -> Result<Tool, String> {
    let bytes = store
        .tool_component(&record.tenant, &record.digest)
        .map_err(|e| e.to_string())?
        .ok_or("its component is not stored")?;
    if crate::hex(&Sha256::digest(&bytes)) != record.digest {
        return Err("the stored component does not match its digest".into());
    }
    let report: Report = serde_json::from_str(&record.report).map_err(|e| format!("its report: {e}"))?;
    let component = match cache {
        Some(cache) => cache.component(sandbox.engine(), &record.digest, &bytes),
        None => Component::new(sandbox.engine(), &bytes).map_err(|e| format!("{e:#}")),
    }?;
    let mut tool = from_component(sandbox, &component, &record.digest, report.limits, Source::Validated)?;
    tool.owner = Some(record.tenant.clone());
    Ok(tool)
}
