//! Builds the guest programs under `guests/` and the example agents and tools under `../agents/` for
//! `wasm32-wasip2` and writes their paths to `$OUT_DIR/guests.rs` (`GUESTS`, `AGENTS`, `TOOLS`), so the single
//! test command builds every component the tests load.
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
    ensure_wasm_target()?;
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../wit").display());
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../sdk/src").display());
    let mut list = String::new();
    // The hostile and probe guests; the example agents of `agents/` and the example tools under `agents/tools/`,
    // crates of one workspace (the crates `agents/build` builds).
    let guests = manifest_dir.join("guests");
    let release = build(&guests, &out.join("guests-target"))?;
    components(&mut list, "GUESTS", "guest program", &guests, &release)?;
    let agents = manifest_dir.join("../agents");
    let release = build(&agents, &out.join("agents-target"))?;
    components(&mut list, "AGENTS", "example agent", &agents, &release)?;
    components(&mut list, "TOOLS", "example tool", &agents.join("tools"), &release)?;
    fs::write(out.join("guests.rs"), list)?;
    Ok(())
}

/// Make sure the toolchain building this has the `wasm32-wasip2` target, adding it through rustup when it does
/// not: on a machine where rustup does not install what `rust-toolchain.toml` asks for on use
/// (`RUSTUP_AUTO_INSTALL=0`), the test command must still work by itself.
fn ensure_wasm_target() -> Result<()> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output()?;
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout)?.trim());
    if sysroot.join("lib/rustlib/wasm32-wasip2/lib").is_dir() {
        return Ok(());
    }
    println!("cargo:warning=the wasm32-wasip2 target is missing; adding it with `rustup target add wasm32-wasip2`");
    // rustup picks the toolchain of this build from RUSTUP_TOOLCHAIN, which its proxy set.
    let added = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    match added {
        Ok(status) if status.success() && sysroot.join("lib/rustlib/wasm32-wasip2/lib").is_dir() => Ok(()),
        Ok(status) => {
            Err(format!("`rustup target add wasm32-wasip2` failed ({status}); the tests build guests for that target")
                .into())
        }
        Err(e) => Err(format!(
            "the wasm32-wasip2 target is not installed for {} and rustup could not be run ({e}); install the \
             target for this toolchain (the tests build guests for it)",
            sysroot.display()
        )
        .into()),
    }
}

/// Build the cargo workspace at `workspace` for `wasm32-wasip2` into `target_dir`; returns where the
/// components are.
fn build(workspace: &Path, target_dir: &Path) -> Result<PathBuf> {
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
        return Err(format!("building {} for wasm32-wasip2 failed ({status})", workspace.display()).into());
    }
    Ok(target_dir.join("wasm32-wasip2").join("release"))
}

/// Append `pub const {constant}` to `list`: every crate directly under `dir`, with the path of its component in
/// `release`; and watch each crate's sources.
fn components(list: &mut String, constant: &str, what: &str, dir: &Path, release: &Path) -> Result<()> {
    writeln!(list, "/// Every {what}: `(crate name, path of its component)`.")?;
    writeln!(list, "#[allow(dead_code)]\npub const {constant}: &[(&str, &str)] = &[")?;
    for name in crate_names(dir)? {
        println!("cargo:rerun-if-changed={}", dir.join(&name).join("src").display());
        println!("cargo:rerun-if-changed={}", dir.join(&name).join("Cargo.toml").display());
        let wasm = release.join(format!("{}.wasm", name.replace('-', "_")));
        if !wasm.is_file() {
            return Err(format!("{name} produced no {}", wasm.display()).into());
        }
        writeln!(list, "    ({name:?}, {:?}),", wasm.display().to_string())?;
    }
    list.push_str("];\n");
    Ok(())
}

/// Each directory of `dir` with a `Cargo.toml` is a crate, named after its directory (`agents/tools` has none,
/// so it is no agent).
fn crate_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
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
