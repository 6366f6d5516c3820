//! The paths of the components `build.rs` built: the hostile and probe guests of `guests/` (`GUESTS`), the
//! example agents of `../agents/` (`AGENTS`) and the example tools of `../agents/tools/` (`TOOLS`), for tests of other crates (the CLI tests of
//! `converge-host`). The integration tests themselves live in the `it` binary (see `it/main.rs`).

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
