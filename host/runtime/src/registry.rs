//! The registry: every `*.wasm` in the agents directory and in the trusted tools directory, checked, compiled
//! (or taken from the cache) and linked, with `info()` called once; and the validated tools the service adds.
//!
//! A file is hostile until checked: it is size-capped, must be a component (not a core module), must export
//! exactly one `converge:agent` world, may import only WASI 0.2.x and its world's `converge:agent` interfaces,
//! must link, and must answer `info()` within the default limits with a declaration the engine accepts. A file
//! that fails any check is rejected with its name and the reason, and never stops the others. Names are unique
//! over agents and invariants: the first file in byte order of file name keeps a name, later ones are rejected.
//!
//! [`Registry::refresh`] rescans the directories, so a file dropped in while serving is picked up for new jobs;
//! unchanged files (same length and modification time) are not loaded again. Adding or removing a validated
//! tool rebuilds the [`Catalog`] from what is loaded, without touching the disk.

use crate::inspect::{Kind, check_header, check_imports, read_capped, world};
use crate::tools::{Source, Tool, ToolSet};
use converge_engine::{AgentInfo, InvariantInfo, check_agent_info, check_invariant_info};
use converge_sandbox::{AgentPre, Cache, Component, InvariantPre, Limits, Sandbox};
use converge_service::{AgentEntry, InvariantEntry, Inventory, Rejection, RuntimeError, TrustedTool};
use converge_store::ToolLimits;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// A loaded agent or invariant, ready to instantiate.
pub struct Loaded {
    /// Its declared name.
    pub name: String,
    /// The file it came from (file name only).
    pub file: String,
    /// SHA-256 of the component bytes, lowercase hex.
    pub digest: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// What it is, with its declaration and its linked form.
    pub component: Loadout,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("name", &self.name).field("file", &self.file).finish_non_exhaustive()
    }
}

/// The declaration and linked form of a loaded component.
pub enum Loadout {
    /// An agent.
    Agent {
        /// What `info()` returned.
        info: AgentInfo,
        /// Linked and type-checked; instantiating it is the per-call cost.
        pre: AgentPre,
    },
    /// An invariant.
    Invariant {
        /// What `info()` returned.
        info: InvariantInfo,
        /// Linked and type-checked.
        pre: InvariantPre,
    },
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

    /// The catalog as data: what the service lists and checks.
    pub fn inventory(&self) -> Inventory {
        let component = |l: &Loaded| converge_service::Component {
            name: l.name.clone(),
            file: l.file.clone(),
            digest: l.digest.clone(),
            size: l.size,
        };
        Inventory {
            agents: self.agents().map(|(l, info)| AgentEntry { component: component(l), info: info.clone() }).collect(),
            invariants: self
                .invariants()
                .map(|(l, info)| InvariantEntry { component: component(l), info: info.clone() })
                .collect(),
            rejected: self.rejected.clone(),
            tools: self
                .tools
                .trusted()
                .map(|t| TrustedTool {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    digest: t.digest.clone(),
                    limits: t.limits,
                })
                .collect(),
            rejected_tools: self.rejected_tools.clone(),
        }
    }
}

/// A file's length and modification time: unchanged files are not loaded again.
type Stamp = (u64, Option<SystemTime>);

struct Entry<T> {
    stamp: Stamp,
    outcome: Result<Arc<T>, Rejection>,
}

/// The agents directory and what loaded from it; the trusted tools directory and the validated tools.
pub struct Registry {
    sandbox: Arc<Sandbox>,
    dir: PathBuf,
    cache: Option<Cache>,
    files: BTreeMap<String, Entry<Loaded>>,
    tools_dir: Option<PathBuf>,
    tool_files: BTreeMap<String, Entry<Tool>>,
    validated: Vec<Arc<Tool>>,
}

impl Registry {
    /// A registry over `dir`; compiled code is cached under `cache` when given.
    pub fn new(sandbox: Arc<Sandbox>, dir: impl Into<PathBuf>, cache: Option<PathBuf>) -> Self {
        let cache = cache.map(|dir| Cache::new(dir, &sandbox));
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

    /// Make a validated tool callable by its owner's jobs (later ones win a name), and return the catalog.
    pub fn add_validated(&mut self, tool: Arc<Tool>) -> Catalog {
        self.validated.retain(|t| t.digest != tool.digest || t.owner != tool.owner);
        self.validated.push(tool);
        self.catalog()
    }

    /// Make the validated tool `digest` of `owner` uncallable, and return the catalog.
    pub fn remove_validated(&mut self, owner: &str, digest: &str) -> Catalog {
        self.validated.retain(|t| t.digest != digest || t.owner.as_deref() != Some(owner));
        self.catalog()
    }

    /// The compile cache, if any.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The sandbox components are compiled and linked by.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The directory scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rescan the directories: load new and changed files, forget removed ones, and return what is loaded now.
    ///
    /// # Errors
    /// Only if a directory itself cannot be read; a bad file is a [`Rejection`], never an error.
    pub fn refresh(&mut self) -> Result<Catalog, RuntimeError> {
        let (sandbox, cache) = (&self.sandbox, self.cache.as_ref());
        rescan(&self.dir, &mut self.files, |file, path| load(sandbox, cache, file, path))?;
        if let Some(dir) = &self.tools_dir {
            rescan(dir, &mut self.tool_files, |file, path| load_tool(sandbox, cache, file, path))?;
        }
        Ok(self.catalog())
    }

    /// What is loaded now, without touching the disk.
    pub fn catalog(&self) -> Catalog {
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

/// Bring `entries` up to date with the `*.wasm` files of `dir`, loading new and changed ones with `load`.
fn rescan<T>(
    dir: &Path,
    entries: &mut BTreeMap<String, Entry<T>>,
    mut load: impl FnMut(&str, &Path) -> Result<T, Rejection>,
) -> Result<(), RuntimeError> {
    let present = scan(dir)?;
    entries.retain(|file, _| present.contains_key(file));
    for (file, (path, stamp)) in present {
        if entries.get(&file).is_some_and(|e| e.stamp == stamp) {
            continue;
        }
        let outcome = load(&file, &path).map(Arc::new);
        entries.insert(file, Entry { stamp, outcome });
    }
    Ok(())
}

/// The `*.wasm` files of `dir`, with their length and modification time.
fn scan(dir: &Path) -> Result<BTreeMap<String, (PathBuf, Stamp)>, RuntimeError> {
    let unreadable =
        |e: std::io::Error| RuntimeError { context: format!("reading {}", dir.display()), message: e.to_string() };
    let entries = std::fs::read_dir(dir).map_err(unreadable)?;
    let mut present = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
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
    let bytes = read_capped(path).map_err(|why| reject(file, None, why.to_string()))?;
    check_header(&bytes).map_err(|why| reject(file, None, why.to_string()))?;
    let digest = converge_engine::hex(&Sha256::digest(&bytes));
    let component = sandbox
        .compile_cached(cache, &digest, &bytes)
        .map_err(|e| reject(file, None, format!("is not a valid component: {}", converge_sandbox::first_line(&e.0))))?;
    let kind = world(sandbox, &component).map_err(|why| reject(file, None, why.to_string()))?;
    check_imports(sandbox, &component, kind).map_err(|why| reject(file, None, why.to_string()))?;
    Ok((digest, bytes.len() as u64, component, kind))
}

/// Load one file of the trusted tools directory: a tool, with the default tool limits.
fn load_tool(sandbox: &Sandbox, cache: Option<&Cache>, file: &str, path: &Path) -> Result<Tool, Rejection> {
    let (digest, _size, component, kind) = compile(sandbox, cache, file, path)?;
    if kind != Kind::Tool {
        return Err(reject(file, None, format!("is of world {}, not converge-tool", kind.world())));
    }
    Tool::link(sandbox, &component, &digest, Source::Trusted, None, ToolLimits::default())
        .map_err(|why| reject(file, None, why.to_string()))
}

/// Read, check, compile and link one file, and call its `info()`.
fn load(sandbox: &Sandbox, cache: Option<&Cache>, file: &str, path: &Path) -> Result<Loaded, Rejection> {
    let (digest, size, component, kind) = compile(sandbox, cache, file, path)?;
    let limits = Limits::load();
    let (name, component) = match kind {
        Kind::Agent => {
            let pre = sandbox.link_agent(&component).map_err(|e| reject(file, None, e.to_string()))?;
            let info = sandbox
                .agent_info(&pre, &limits)
                .result
                .map_err(|f| reject(file, None, format!("info() failed ({}): {}", f.kind, f.message)))?;
            check_agent_info(&info).map_err(|why| reject(file, Some(&info.name), why))?;
            (info.name.clone(), Loadout::Agent { info, pre })
        }
        Kind::Invariant => {
            let pre = sandbox.link_invariant(&component).map_err(|e| reject(file, None, e.to_string()))?;
            let info = sandbox
                .invariant_info(&pre, &limits)
                .result
                .map_err(|f| reject(file, None, format!("info() failed ({}): {}", f.kind, f.message)))?;
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
