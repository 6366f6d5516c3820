//! The registry: every `*.wasm` in the agents directory, checked, compiled (or taken from the cache) and
//! pre-instantiated, with `info()` called once.
//!
//! A file is hostile until checked: it is size-capped, must be a component (not a core module), must export
//! exactly one `converge:agent` world, may import only WASI 0.2.x and its world's `converge:agent` interfaces,
//! must link, and must answer `info()` within the default limits with a declaration the engine accepts. A file
//! that fails any check is rejected with its name and the reason, and never stops the others. Names are unique
//! over agents and invariants: the first file in byte order of file name keeps a name, later ones are rejected.
//!
//! [`Registry::refresh`] rescans the directory, so a file dropped in while serving is picked up for new jobs;
//! unchanged files (same length and modification time) are not loaded again.

use crate::bindings::agent::ConvergeAgentPre;
use crate::bindings::invariant::ConvergeInvariantPre;
use crate::bindings::types;
use crate::cache::Cache;
use crate::error::HostError;
use crate::sandbox::{CallSetup, Limits, Sandbox, State};
use crate::tools::{Source, Tool, ToolLimits, ToolSet};
use converge_engine::{AgentInfo, InvariantClass, InvariantInfo, check_agent_info, check_invariant_info};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use wasmtime::component::Component;

/// Largest component file accepted (a componentize-py agent is about 18 MB).
pub const MAX_COMPONENT_BYTES: u64 = 64 * 1024 * 1024;

const AGENT_EXPORT: &str = "converge:agent/agent@0.1.0";
const INVARIANT_EXPORT: &str = "converge:agent/invariant@0.1.0";
const TOOL_EXPORT: &str = "converge:agent/tool@0.1.0";
/// The WASI packages the host links, each at any 0.2.x version.
const WASI_PACKAGES: [&str; 7] = ["cli", "clocks", "filesystem", "http", "io", "random", "sockets"];

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `converge-agent`.
    Agent,
    /// `converge-invariant`.
    Invariant,
    /// `converge-tool`.
    Tool,
}

impl Kind {
    /// The world's name.
    pub fn world(self) -> &'static str {
        match self {
            Self::Agent => "converge-agent",
            Self::Invariant => "converge-invariant",
            Self::Tool => "converge-tool",
        }
    }
}

/// A loaded component, ready to instantiate.
pub struct Loaded {
    /// Its declared name.
    pub name: String,
    /// The file it came from (file name only).
    pub file: String,
    /// SHA-256 of the component bytes, lowercase hex.
    pub digest: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// What it is, with its declaration and its pre-instantiated form.
    pub component: Loadout,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("name", &self.name).field("file", &self.file).finish_non_exhaustive()
    }
}

/// The declaration and pre-instance of a loaded component.
pub enum Loadout {
    /// An agent.
    Agent {
        /// What `info()` returned.
        info: AgentInfo,
        /// Linked and type-checked; instantiating it is the per-call cost.
        pre: ConvergeAgentPre<State>,
    },
    /// An invariant.
    Invariant {
        /// What `info()` returned.
        info: InvariantInfo,
        /// Linked and type-checked.
        pre: ConvergeInvariantPre<State>,
    },
}

/// A file that did not load, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The file name.
    pub file: String,
    /// The declared name, when the component got far enough to declare one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why, in a sentence.
    pub reason: String,
}

/// What the directories hold at one moment: loaded components by name, the callable tools, and the rejected
/// files.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Agents and invariants, by name.
    pub loaded: BTreeMap<String, Arc<Loaded>>,
    /// Files of the agents directory that did not load, by file name.
    pub rejected: Vec<Rejection>,
    /// Every callable tool: the tools directory's and the validated ones.
    pub tools: Arc<ToolSet>,
    /// Files of the tools directory that did not load, by file name.
    pub rejected_tools: Vec<Rejection>,
}

impl Catalog {
    /// The agents, by name.
    pub fn agents(&self) -> impl Iterator<Item = (&Arc<Loaded>, &AgentInfo)> {
        self.loaded.values().filter_map(|l| match &l.component {
            Loadout::Agent { info, .. } => Some((l, info)),
            Loadout::Invariant { .. } => None,
        })
    }

    /// The invariants, by name.
    pub fn invariants(&self) -> impl Iterator<Item = (&Arc<Loaded>, &InvariantInfo)> {
        self.loaded.values().filter_map(|l| match &l.component {
            Loadout::Invariant { info, .. } => Some((l, info)),
            Loadout::Agent { .. } => None,
        })
    }
}

/// A file's length and modification time: unchanged files are not loaded again.
type Stamp = (u64, Option<SystemTime>);

struct FileEntry {
    stamp: (u64, Option<SystemTime>),
    outcome: Result<Arc<Loaded>, Rejection>,
}

/// The agents directory and what loaded from it; the trusted tools directory and the validated tools.
pub struct Registry {
    sandbox: Arc<Sandbox>,
    dir: PathBuf,
    cache: Option<Cache>,
    files: BTreeMap<String, FileEntry>,
    tools_dir: Option<PathBuf>,
    tool_files: BTreeMap<String, ToolEntry>,
    validated: Vec<Arc<Tool>>,
}

struct ToolEntry {
    stamp: (u64, Option<SystemTime>),
    outcome: Result<Arc<Tool>, Rejection>,
}

impl Registry {
    /// A registry over `dir`; compiled code is cached under `cache` when given.
    pub fn new(sandbox: Arc<Sandbox>, dir: impl Into<PathBuf>, cache: Option<PathBuf>) -> Self {
        let cache = cache.map(|dir| Cache::new(dir, sandbox.engine()));
        Self {
            sandbox,
            dir: dir.into(),
            cache,
            files: BTreeMap::new(),
            tools_dir: None,
            tool_files: BTreeMap::new(),
            validated: Vec::new(),
        }
    }

    /// Also load the trusted tools of `dir` (every `*.wasm` of world `converge-tool`).
    #[must_use]
    pub fn with_tools(mut self, dir: Option<PathBuf>) -> Self {
        self.tools_dir = dir;
        self
    }

    /// Make a validated tool callable by its owner's jobs, from the next [`refresh`](Self::refresh) on (later
    /// ones win a name).
    pub fn add_validated(&mut self, tool: Arc<Tool>) {
        if !self.validated.iter().any(|t| t.digest == tool.digest && t.owner == tool.owner) {
            self.validated.push(tool);
        }
    }

    /// Make the validated tool `digest` of `owner` uncallable, from the next [`refresh`](Self::refresh) on.
    pub fn remove_validated(&mut self, owner: &str, digest: &str) {
        self.validated.retain(|t| t.digest != digest || t.owner.as_deref() != Some(owner));
    }

    /// The compile cache, if any.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The directory scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rescan the directory: load new and changed files, forget removed ones, and return what is loaded now.
    ///
    /// # Errors
    /// Only if the directory itself cannot be read; a bad file is a [`Rejection`], never an error.
    pub fn refresh(&mut self) -> Result<Catalog, HostError> {
        let present = scan(&self.dir)?;
        self.files.retain(|file, _| present.contains_key(file));
        for (file, (path, stamp)) in present {
            if self.files.get(&file).is_some_and(|e| e.stamp == stamp) {
                continue;
            }
            let outcome = load(&self.sandbox, self.cache.as_ref(), &file, &path).map(Arc::new);
            self.files.insert(file, FileEntry { stamp, outcome });
        }
        if let Some(dir) = &self.tools_dir {
            let present = scan(dir)?;
            self.tool_files.retain(|file, _| present.contains_key(file));
            for (file, (path, stamp)) in present {
                if self.tool_files.get(&file).is_some_and(|e| e.stamp == stamp) {
                    continue;
                }
                let outcome = load_tool(&self.sandbox, self.cache.as_ref(), &file, &path).map(Arc::new);
                self.tool_files.insert(file, ToolEntry { stamp, outcome });
            }
        }
        Ok(self.catalog())
    }

    fn catalog(&self) -> Catalog {
        let mut catalog = Catalog::default();
        let mut trusted = Vec::new();
        for (file, entry) in &self.tool_files {
            match &entry.outcome {
                Ok(tool) if trusted.iter().any(|t: &Arc<Tool>| t.name == tool.name) => {
                    catalog.rejected_tools.push(reject(
                        file,
                        Some(&tool.name),
                        format!("the tool name {} is already taken by an earlier file", tool.name),
                    ));
                }
                Ok(tool) => trusted.push(Arc::clone(tool)),
                Err(rejection) => catalog.rejected_tools.push(rejection.clone()),
            }
        }
        catalog.tools = Arc::new(ToolSet::new(trusted, self.validated.iter().cloned()));
        for (file, entry) in &self.files {
            match &entry.outcome {
                Ok(loaded) => match catalog.loaded.get(&loaded.name) {
                    Some(first) => catalog.rejected.push(Rejection {
                        file: file.clone(),
                        name: Some(loaded.name.clone()),
                        reason: format!("the name {} is already taken by {}", loaded.name, first.file),
                    }),
                    None => {
                        catalog.loaded.insert(loaded.name.clone(), Arc::clone(loaded));
                    }
                },
                Err(rejection) => catalog.rejected.push(rejection.clone()),
            }
        }
        catalog
    }
}

/// The `*.wasm` files of `dir`, with their length and modification time.
fn scan(dir: &Path) -> Result<BTreeMap<String, (PathBuf, Stamp)>, HostError> {
    let entries = std::fs::read_dir(dir).map_err(|e| HostError::io(dir, &e))?;
    let mut present = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| HostError::io(dir, &e))?;
        let path = entry.path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let meta = entry.metadata().ok();
        let stamp = (meta.as_ref().map_or(0, std::fs::Metadata::len), meta.and_then(|m| m.modified().ok()));
        present.insert(file, (path, stamp));
    }
    Ok(present)
}

fn reject(file: &str, name: Option<&str>, reason: impl Into<String>) -> Rejection {
    Rejection { file: file.to_owned(), name: name.map(str::to_owned), reason: reason.into() }
}

/// Read, check and compile one file: its bytes' digest and size, the component, and its world.
fn compile(
    sandbox: &Sandbox,
    cache: Option<&Cache>,
    file: &str,
    path: &Path,
) -> Result<(String, u64, Component, Kind), Rejection> {
    let bytes = read_capped(path).map_err(|why| reject(file, None, why))?;
    check_header(&bytes).map_err(|why| reject(file, None, why))?;
    let digest = crate::hex(&Sha256::digest(&bytes));
    let component = match cache {
        Some(cache) => cache.component(sandbox.engine(), &digest, &bytes),
        None => Component::new(sandbox.engine(), &bytes).map_err(|e| format!("{e:#}")),
    }
    .map_err(|e| reject(file, None, format!("is not a valid component: {}", first_line(&e))))?;
    let kind = world(sandbox, &component).map_err(|why| reject(file, None, why))?;
    check_imports(sandbox, &component, kind).map_err(|why| reject(file, None, why))?;
    Ok((digest, bytes.len() as u64, component, kind))
}

/// Load one file of the trusted tools directory: a tool, with the default tool limits.
fn load_tool(sandbox: &Sandbox, cache: Option<&Cache>, file: &str, path: &Path) -> Result<Tool, Rejection> {
    let (digest, _size, component, kind) = compile(sandbox, cache, file, path)?;
    if kind != Kind::Tool {
        return Err(reject(file, None, format!("is of world {}, not converge-tool", kind.world())));
    }
    let (pre, info) = crate::tools::prepare(sandbox, &component).map_err(|why| reject(file, None, why))?;
    check_tool_name(&info.name).map_err(|why| reject(file, Some(&info.name), why))?;
    Ok(Tool {
        name: info.name,
        description: info.description,
        digest,
        source: Source::Trusted,
        owner: None,
        limits: ToolLimits::default(),
        pre,
    })
}

/// A tool's name: the rules of agent names (`name@digest` is how callers pin one).
///
/// # Errors
/// A sentence naming the problem.
pub fn check_tool_name(name: &str) -> Result<(), String> {
    converge_engine::names::check_name(name).map_err(|e| e.to_string())
}

/// Read, check, compile and pre-instantiate one file, and call its `info()`.
fn load(sandbox: &Sandbox, cache: Option<&Cache>, file: &str, path: &Path) -> Result<Loaded, Rejection> {
    let (digest, size, component, kind) = compile(sandbox, cache, file, path)?;
    let pre = sandbox
        .linker()
        .instantiate_pre(&component)
        .map_err(|e| reject(file, None, format!("does not link: {}", first_line(&format!("{e:#}")))))?;
    let wrong_type = |e: wasmtime::Error| {
        reject(file, None, format!("exports {} with the wrong type: {}", kind.world(), first_line(&format!("{e:#}"))))
    };
    let (name, component) = match kind {
        Kind::Agent => {
            let pre = ConvergeAgentPre::new(pre).map_err(wrong_type)?;
            let info = agent_info(sandbox, &pre).map_err(|why| reject(file, None, why))?;
            check_agent_info(&info).map_err(|why| reject(file, Some(&info.name), why))?;
            (info.name.clone(), Loadout::Agent { info, pre })
        }
        Kind::Invariant => {
            let pre = ConvergeInvariantPre::new(pre).map_err(wrong_type)?;
            let info = invariant_info(sandbox, &pre).map_err(|why| reject(file, None, why))?;
            check_invariant_info(&info).map_err(|why| reject(file, Some(&info.name), why))?;
            (info.name.clone(), Loadout::Invariant { info, pre })
        }
        Kind::Tool => {
            return Err(reject(
                file,
                None,
                "is a tool (world converge-tool); tools load from the tools directory (--tools), not as agents",
            ));
        }
    };
    Ok(Loaded { name, file: file.to_owned(), digest, size, component })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_COMPONENT_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(format!("is larger than {MAX_COMPONENT_BYTES} bytes"));
    }
    Ok(bytes)
}

/// A component, not a core module and not something else.
///
/// # Errors
/// Why the bytes are not a component.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err("is a core WebAssembly module, not a component (build for \
             wasm32-wasip2, or wrap it with `wasm-tools component new`)"
            .into()),
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', ..]) => Err("is WebAssembly of an unsupported version or layer".into()),
        _ => Err("is not WebAssembly (no \\0asm header)".into()),
    }
}

/// Which `converge:agent` world the component exports; exactly one.
pub(crate) fn world(sandbox: &Sandbox, component: &Component) -> Result<Kind, String> {
    let ty = component.component_type();
    let mut kinds = Vec::new();
    for (name, _) in ty.exports(sandbox.engine()) {
        match name {
            AGENT_EXPORT => kinds.push(Kind::Agent),
            INVARIANT_EXPORT => kinds.push(Kind::Invariant),
            TOOL_EXPORT => kinds.push(Kind::Tool),
            _ => {}
        }
    }
    match kinds.as_slice() {
        [kind] => Ok(*kind),
        [] => Err(format!(
            "exports none of {AGENT_EXPORT}, {INVARIANT_EXPORT} or {TOOL_EXPORT} (wrong world: build against wit/)"
        )),
        _ => Err("exports more than one converge:agent world".into()),
    }
}

/// Whether `name` may be imported by a component of `kind`.
pub fn import_allowed(name: &str, kind: Kind) -> bool {
    if let Some(rest) = name.strip_prefix("wasi:") {
        let Some((path, version)) = rest.split_once('@') else { return false };
        let package = path.split('/').next().unwrap_or("");
        return WASI_PACKAGES.contains(&package) && version.starts_with("0.2.");
    }
    match name {
        "converge:agent/types@0.1.0" | "converge:agent/log@0.1.0" => true,
        "converge:agent/context@0.1.0" => kind != Kind::Tool,
        "converge:agent/tools@0.1.0" => kind == Kind::Agent,
        _ => false,
    }
}

fn check_imports(sandbox: &Sandbox, component: &Component, kind: Kind) -> Result<(), String> {
    let ty = component.component_type();
    let refused: Vec<&str> =
        ty.imports(sandbox.engine()).map(|(n, _)| n).filter(|n| !import_allowed(n, kind)).collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(format!(
        "imports {}, outside what the host provides to world {} (WASI 0.2.x and its converge:agent interfaces)",
        refused.join(", "),
        kind.world()
    ))
}

fn agent_info(sandbox: &Sandbox, pre: &ConvergeAgentPre<State>) -> Result<AgentInfo, String> {
    let out = sandbox.call(&Limits::load(), CallSetup::default(), |store| {
        let instance = pre.instantiate(&mut *store)?;
        instance.converge_agent_agent().call_info(&mut *store)
    });
    let info = out.result.map_err(|f| format!("info() failed ({}): {}", f.kind, f.message))?;
    let types::AgentInfo { name, description, reads, writes, tools, required } = info;
    Ok(AgentInfo { name, description, reads, writes, tools, required })
}

fn invariant_info(sandbox: &Sandbox, pre: &ConvergeInvariantPre<State>) -> Result<InvariantInfo, String> {
    let out = sandbox.call(&Limits::load(), CallSetup::default(), |store| {
        let instance = pre.instantiate(&mut *store)?;
        instance.converge_agent_invariant().call_info(&mut *store)
    });
    let info = out.result.map_err(|f| format!("info() failed ({}): {}", f.kind, f.message))?;
    let class = match info.class {
        types::InvariantClass::Structural => InvariantClass::Structural,
        types::InvariantClass::Semantic => InvariantClass::Semantic,
        types::InvariantClass::Acceptance => InvariantClass::Acceptance,
    };
    Ok(InvariantInfo { name: info.name, description: info.description, class })
}
