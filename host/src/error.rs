//! The host's errors at its boundaries.

use std::path::PathBuf;

/// What can go wrong outside a guest call.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The wasmtime engine or linker could not be set up.
    #[error("sandbox: {0}")]
    Engine(String),
    /// A directory or file the host needs could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The job spec is malformed or names something not loaded.
    #[error(transparent)]
    Job(#[from] converge_engine::JobError),
    /// A job file could not be read or parsed.
    #[error("{0}")]
    BadInput(String),
}

impl HostError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: &std::io::Error) -> Self {
        Self::Io { path: path.into(), message: error.to_string() }
    }
}
