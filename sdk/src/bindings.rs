//! The generated guest bindings of `converge:agent@0.1.0`, one module per world, and nothing else.
//!
//! This is the only file that runs `wit_bindgen::generate!`, and the only one allowed `unsafe`: the canonical ABI
//! glue it emits needs it. The `agent` world generates the shared interfaces (`types`, `context`, `tools`, `log`);
//! the `invariant` and `tool` worlds reuse them through `with`, so a `Fact` or a `View` is one type whichever world
//! a component implements. Each world's own export macro (`pub_export_macro`) is wrapped by the crate-root
//! macros `export_agent!`, `export_invariant!` and `export_tool!`, which name the world's exports and so decide
//! what the component exports. Imports are linked only when called: a component imports `tools` only if it
//! calls `tools::invoke`, so an invariant or a tool that never calls it stays inside its world.
//!
//! Authors use the flat names at the crate root; these modules are public for what those names do not cover.

/// Bindings of the world `converge-agent`: imports `context`, `tools` and `log`, exports `agent`.
///
/// Also the home of the shared interfaces: `converge::agent::{types, context, tools, log}`.
#[allow(unsafe_code, missing_docs, clippy::pedantic, clippy::all)]
pub mod agent {
    wit_bindgen::generate!({
        world: "converge-agent",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_agent",
        default_bindings_module: "converge_sdk::bindings::agent",
        additional_derives: [PartialEq],
    });
}

/// Bindings of the world `converge-invariant`: imports `context` and `log`, exports `invariant`.
#[allow(unsafe_code, missing_docs, clippy::pedantic, clippy::all)]
pub mod invariant {
    wit_bindgen::generate!({
        world: "converge-invariant",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_invariant",
        default_bindings_module: "converge_sdk::bindings::invariant",
        with: {
            "converge:agent/types@0.1.0": crate::bindings::agent::converge::agent::types,
            "converge:agent/context@0.1.0": crate::bindings::agent::converge::agent::context,
            "converge:agent/log@0.1.0": crate::bindings::agent::converge::agent::log,
        },
    });
}

/// Bindings of the world `converge-tool`: imports `log`, exports `tool`.
#[allow(unsafe_code, missing_docs, clippy::pedantic, clippy::all)]
pub mod tool {
    wit_bindgen::generate!({
        world: "converge-tool",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_tool",
        default_bindings_module: "converge_sdk::bindings::tool",
        with: {
            "converge:agent/types@0.1.0": crate::bindings::agent::converge::agent::types,
            "converge:agent/log@0.1.0": crate::bindings::agent::converge::agent::log,
        },
    });
}

pub use agent::converge::agent::{context, log, tools, types};
