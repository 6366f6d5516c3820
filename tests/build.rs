//! Builds the guest programs under `guests/` for `wasm32-wasip2` and writes their paths to
//! `$OUT_DIR/guests.rs`, so the single test command builds every component the tests load.
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
    let guests = manifest_dir.join("guests");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", guests.display());
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../wit").display());

    let names = guest_names(&guests)?;
    let target_dir = out.join("guests-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests).args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"]).arg(&target_dir);
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
            "building the guests in {} failed ({status}); is the wasm32-wasip2 target installed? \
             `rustup toolchain install` adds it from rust-toolchain.toml",
            guests.display()
        )
        .into());
    }

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut list = String::from(
        "/// Every guest program: `(crate name, path of its component)`.\npub const GUESTS: &[(&str, &str)] = &[\n",
    );
    for name in &names {
        let wasm = release.join(format!("{}.wasm", name.replace('-', "_")));
        if !wasm.is_file() {
            return Err(format!("guest {name} produced no {}", wasm.display()).into());
        }
        writeln!(list, "    ({name:?}, {:?}),", wasm.display().to_string())?;
    }
    list.push_str("];\n");
    fs::write(out.join("guests.rs"), list)?;
    Ok(())
}

/// Each directory of `guests/` with a `Cargo.toml` is a guest crate, named after its directory.
fn guest_names(guests: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(guests)? {
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
