//! `converge validate-tool T.wasm --manifest M.json`: the validation pipeline, offline; nothing is stored.

use crate::Exit;
use converge_runtime::tools::validate;
use converge_sandbox::{Sandbox, SandboxConfig};
use converge_store::tool::MAX_TOOL_BYTES;
use converge_store::{Manifest, Verdict};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

pub(crate) fn validate_tool(tool: &Path, manifest: &Path) -> Result<u8, Exit> {
    let text = std::fs::read(manifest).map_err(|e| Exit::input(format!("{}: {e}", manifest.display())))?;
    let manifest = Manifest::parse(&text).map_err(|e| Exit::input(format!("{}: {e}", manifest.display())))?;
    let file = std::fs::File::open(tool).map_err(|e| Exit::input(format!("{}: {e}", tool.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOOL_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Exit::input(format!("{}: {e}", tool.display())))?;
    let sandbox = Arc::new(
        Sandbox::new(SandboxConfig { instances: 4, pooling: true, ..SandboxConfig::default() })
            .map_err(Exit::failure)?,
    );
    let validated = validate(&sandbox, None, &bytes, &manifest);
    let text = serde_json::to_string_pretty(&validated.report).map_err(Exit::failure)?;
    println!("{text}");
    Ok(u8::from(validated.report.verdict != Verdict::Accepted))
}
