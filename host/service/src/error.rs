//! What a service call can answer besides success: a client's mistake (each named, so a front end can give an
//! honest status), a full queue, or a failure of the store or of the service itself.

use converge_engine::Status;
use converge_store::{StoreError, ToolStatus};

/// A client mistake or a service failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The spec names an agent or invariant that is not loaded, or a component declaration is unusable.
    #[error("{0}")]
    InvalidSpec(String),
    /// A field of a request is out of range (named in the message).
    #[error("{0}")]
    Invalid(String),
    /// No such job, tool or question for this tenant.
    #[error("no {0}")]
    NotFound(String),
    /// The job never asked this question.
    #[error("job {job} has not asked a question {question:?}")]
    UnknownQuestion {
        /// The job.
        job: String,
        /// The question id given.
        question: String,
    },
    /// The question has an answer already.
    #[error("question {question:?} of job {job} is answered already")]
    AlreadyAnswered {
        /// The job.
        job: String,
        /// The question.
        question: String,
    },
    /// The job has ended.
    #[error("job {job} has ended with status {status}")]
    Finished {
        /// The job.
        job: String,
        /// How it ended.
        status: Status,
    },
    /// The idempotency key was used for another spec.
    #[error("the Idempotency-Key was used for job {job} with another body")]
    IdempotencyConflict {
        /// The job the key names.
        job: String,
    },
    /// A review decision that does not apply to the tool's status.
    #[error("tool {digest} is {status}; {}", if *.revoke { "only an accepted tool can be revoked" } else { "only a tool that needs review can be approved or rejected" })]
    NotPending {
        /// The tool.
        digest: String,
        /// Its status.
        status: ToolStatus,
        /// Whether the decision was `revoke`.
        revoke: bool,
    },
    /// The service cannot take more now; try again after `retry_after` seconds.
    #[error("{message}")]
    Overloaded {
        /// Why.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The service failed in a way no client caused.
    #[error("internal: {0}")]
    Internal(String),
}
