//! Nothing to export: this package exists for its integration-test binary, `it` (see `it/main.rs`).
