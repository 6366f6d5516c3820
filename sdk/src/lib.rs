//! converge-sdk: the crate agent authors depend on.
//!
//! The guest bindings to `converge:agent@0.1.0` and the effect builders arrive with issue #3; until then this
//! crate exports nothing, rather than something that looks usable and is not.
