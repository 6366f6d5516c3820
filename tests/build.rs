//! Builds the guest programs under `guests/` and the example agents under `../agents/` for `wasm32-wasip2`
//! and writes their paths to `$OUT_DIR/guests.rs` (`GUESTS`, `AGENTS`), so the single test command builds
//! every component the tests load.
//!
//! The nested cargo gets a clean environment: nothing of the outer build (its target, rustflags, clippy or
//! rustc wrappers) may leak into the guests' build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../wit").display());
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../sdk/src").display());
    let mut list = String::new();
    // The hostile and probe guests, and the example agents of `agents/` (the same crates `agents/build` builds).
    for (dir, constant, what) in [("guests", "GUESTS", "guest program"), ("../agents", "AGENTS", "example agent")] {
        let workspace = manifest_dir.join(dir);
        let names = crate_names(&workspace)?;
        let release = build(&workspace, &out.join(format!("{constant}-target").to_lowercase()))?;
        writeln!(list, "/// Every {what}: `(crate name, path of its component)`.")?;
        writeln!(list, "#[allow(dead_code)]\npub const {constant}: &[(&str, &str)] = &[")?;
        for name in &names {
            let wasm = release.join(format!("{}.wasm", name.replace('-', "_")));
            if !wasm.is_file() {
                return Err(format!("{name} produced no {}", wasm.display()).into());
            }
            writeln!(list, "    ({name:?}, {:?}),", wasm.display().to_string())?;
        }
        list.push_str("];\n");
    }
    fs::write(out.join("guests.rs"), list)?;
    Ok(())
}

/// Build the cargo workspace at `workspace` for `wasm32-wasip2` into `target_dir`; returns where the
/// components are.
fn build(workspace: &Path, target_dir: &Path) -> Result<PathBuf> {
    for entry in fs::read_dir(workspace)? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file() {
            println!("cargo:rerun-if-changed={}", path.join("src").display());
            println!("cargo:rerun-if-changed={}", path.join("Cargo.toml").display());
        }
    }
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.toml").display());
    // A crate added to a workspace that lists its members by glob changes no Cargo.toml: watch the directory
    // itself too (cargo scans it whole), unless builds write inside it.
    if !workspace.join("target").exists() {
        println!("cargo:rerun-if-changed={}", workspace.display());
    }
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--locked", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!(
            "building {} failed ({status}); is the wasm32-wasip2 target installed? \
             `rustup toolchain install` adds it from rust-toolchain.toml",
            workspace.display()
        )
        .into());
    }
    Ok(target_dir.join("wasm32-wasip2").join("release"))
}

/// Each directory of the workspace with a `Cargo.toml` is a crate, named after its directory.
fn crate_names(workspace: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(workspace)? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}
