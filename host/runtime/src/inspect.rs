//! Component inspection: what a file must be before anything else happens to it — a component (not a core
//! module, not garbage), within the size cap, exporting exactly one `converge:agent` world, and importing only
//! what the host serves to that world (WASI 0.2.x and the world's own `converge:agent` interfaces).

use converge_sandbox::{Component, Sandbox};
use serde::Serialize;
use std::path::Path;

/// Largest component file accepted (a componentize-py agent is about 18 MB).
pub const MAX_COMPONENT_BYTES: u64 = 64 * 1024 * 1024;

const AGENT_EXPORT: &str = "converge:agent/agent@0.1.0";
const INVARIANT_EXPORT: &str = "converge:agent/invariant@0.1.0";
const TOOL_EXPORT: &str = "converge:agent/tool@0.1.0";
/// The WASI packages the host links, each at any 0.2.x version.
const WASI_PACKAGES: [&str; 7] = ["cli", "clocks", "filesystem", "http", "io", "random", "sockets"];

/// Why a file is not a component Converge will load, as a sentence about the file ("... is a core module").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The file cannot be read.
    #[error("cannot be read: {0}")]
    Unreadable(String),
    /// The file is over [`MAX_COMPONENT_BYTES`].
    #[error("is larger than {MAX_COMPONENT_BYTES} bytes")]
    TooLarge,
    /// A core module, not a component.
    #[error(
        "is a core WebAssembly module, not a component (build for wasm32-wasip2, or wrap it with `wasm-tools \
         component new`)"
    )]
    CoreModule,
    /// WebAssembly of another version or layer.
    #[error("is WebAssembly of an unsupported version or layer")]
    UnsupportedLayer,
    /// Not WebAssembly at all.
    #[error("is not WebAssembly (no \\0asm header)")]
    NotWasm,
    /// It exports none of the three worlds.
    #[error("exports none of {AGENT_EXPORT}, {INVARIANT_EXPORT} or {TOOL_EXPORT} (wrong world: build against wit/)")]
    NoWorld,
    /// It exports more than one.
    #[error("exports more than one converge:agent world")]
    SeveralWorlds,
    /// It imports what the host does not serve to its world.
    #[error(
        "imports {}, outside what the host provides to world {} (WASI 0.2.x and its converge:agent interfaces)",
        .refused.join(", "),
        .kind.world()
    )]
    Imports {
        /// The refused imports, in the component's order.
        refused: Vec<String>,
        /// Its world.
        kind: Kind,
    },
}

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

/// A file's bytes, at most [`MAX_COMPONENT_BYTES`].
///
/// # Errors
/// The file cannot be read, or is too large.
pub fn read_capped(path: &Path) -> Result<Vec<u8>, InspectError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| InspectError::Unreadable(e.to_string());
    let f = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    f.take(MAX_COMPONENT_BYTES + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(InspectError::TooLarge);
    }
    Ok(bytes)
}

/// A component, not a core module and not something else.
///
/// # Errors
/// Why the bytes are not a component.
pub fn check_header(bytes: &[u8]) -> Result<(), InspectError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(InspectError::CoreModule),
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', ..]) => Err(InspectError::UnsupportedLayer),
        _ => Err(InspectError::NotWasm),
    }
}

/// Which `converge:agent` world the component exports; exactly one.
///
/// # Errors
/// None of them, or more than one.
pub fn world(sandbox: &Sandbox, component: &Component) -> Result<Kind, InspectError> {
    let mut kinds = Vec::new();
    for name in sandbox.exports(component) {
        match name.as_str() {
            AGENT_EXPORT => kinds.push(Kind::Agent),
            INVARIANT_EXPORT => kinds.push(Kind::Invariant),
            TOOL_EXPORT => kinds.push(Kind::Tool),
            _ => {}
        }
    }
    match kinds.as_slice() {
        [kind] => Ok(*kind),
        [] => Err(InspectError::NoWorld),
        _ => Err(InspectError::SeveralWorlds),
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

/// Every import of `component`, refused ones named.
///
/// # Errors
/// [`InspectError::Imports`], naming each import outside what the host provides to `kind`.
pub fn check_imports(sandbox: &Sandbox, component: &Component, kind: Kind) -> Result<(), InspectError> {
    let refused: Vec<String> = sandbox.imports(component).into_iter().filter(|n| !import_allowed(n, kind)).collect();
    if refused.is_empty() { Ok(()) } else { Err(InspectError::Imports { refused, kind }) }
}
