//! The on-disk cache of compiled components.
//!
//! A compiled component is native code: loading one is `unsafe`, because a file that wasmtime did not write
//! could do anything. So the cache is the only thing ever deserialized, and it is keyed so a stale or foreign
//! entry is never picked: the file name is the SHA-256 of the component bytes plus a hash of the engine's
//! compilation settings (wasmtime version, target, every `Config` option that changes code). A file that fails
//! to load is recompiled and replaced. Entries are written to a temporary file and renamed, so a crash never
//! leaves a half-written entry under a valid name. The directory must be writable only by the host.

use crate::engine::Sandbox;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

/// Compiled components under a directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, for a hash that is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Cache {
    /// The cache under `dir` for components compiled by `sandbox`.
    pub fn new(dir: PathBuf, sandbox: &Sandbox) -> Self {
        let mut h = ShaHasher(Sha256::new());
        sandbox.engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = converge_engine::hex(&h.0.finalize()[..8]);
        Self { dir, engine_key }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The component whose bytes hash to `digest`: from the cache if it holds it, else compiled from `bytes`
    /// and stored. A cache that cannot be written only costs the next start its compile time.
    ///
    /// # Errors
    /// The bytes do not compile.
    pub fn component(&self, sandbox: &Sandbox, digest: &str, bytes: &[u8]) -> Result<Component, CompileError> {
        let path = self.path(digest);
        if path.is_file() {
            // SAFETY: only files this cache wrote are named `<sha256 of the bytes>-<engine key>.cwasm` in a
            // directory writable only by the host; wasmtime also checks the header and engine compatibility.
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(&sandbox.engine, &path) };
            if let Ok(component) = cached {
                return Ok(component);
            }
        }
        // Compiled again: write it whether or not a (corrupt or foreign) file holds the name.
        let component = sandbox.compile(bytes)?;
        if let Ok(serialized) = component.serialize() {
            let _ = self.store(&path, &serialized);
        }
        Ok(component)
    }

    /// Keep `component`, already compiled from the bytes that hash to `digest`, so a later [`Self::component`]
    /// loads it instead of compiling again. Best effort, like every write here.
    pub fn put(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        if !path.is_file()
            && let Ok(serialized) = component.serialize()
        {
            let _ = self.store(&path, &serialized);
        }
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

impl Sandbox {
    /// Compile `bytes` (a component) with this engine's settings, through `cache` when one is given: the one
    /// way components are compiled, for agents, trusted tools, stored tools and replays alike.
    ///
    /// # Errors
    /// The bytes do not compile.
    pub fn compile_cached(&self, cache: Option<&Cache>, digest: &str, bytes: &[u8]) -> Result<Component, CompileError> {
        match cache {
            Some(cache) => cache.component(self, digest, bytes),
            None => self.compile(bytes),
        }
    }

    /// Compile `bytes` (a component) with this engine's settings; nothing is cached.
    ///
    /// # Errors
    /// The bytes do not parse, validate under the host's WebAssembly features, or compile.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, CompileError> {
        Component::new(&self.engine, bytes).map_err(|e| CompileError(format!("{e:#}")))
    }
}

/// Bytes that wasmtime would not compile, with everything it said (a disabled proposal is named there).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

impl CompileError {
    /// What wasmtime said, on one line: its non-empty lines joined by `: `.
    pub fn one_line(&self) -> String {
        self.0.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(": ")
    }
}
