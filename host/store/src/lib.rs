//! converge-store: the durable state of the service, behind one trait.
//!
//! A job is its spec plus its answers: the store keeps those, the audit trail (events), the questions, the
//! idempotency keys, the result, and the validated tools with their reviews and history. It never keeps engine
//! state; the service rebuilds that by running the job again (the engine is deterministic).
//!
//! - [`Store`]: the contract. Writes return a [`Reply`] that resolves only after the transaction holding the
//!   write has committed, so "acknowledged" always means "durable". Reads are plain blocking calls.
//! - [`records`]: the typed records; kinds and statuses are enums. [`tool`]: the JSON shapes of tool
//!   validation (SPEC §6).
//! - [`rules`]: what every backend decides the same way (review transitions, resubmissions, when a job is
//!   queued again, event payloads), so a second backend implements storage, not policy.
//! - [`SqliteStore`]: the embedded backend (one file, WAL, group commit, one process).
//! - [`PostgresStore`]: the shared backend (a queue for many replicas, leases fenced by token, `LISTEN/NOTIFY`).
//! - `conformance` (feature `conformance`): the suite every backend must pass.
//!
//! # Invariants of this crate
//!
//! - A write is answered only after its transaction commits; a failed write leaves nothing behind.
//! - The store decides nothing about the engine; it makes the service's transitions atomic.
//! - Nothing here knows HTTP, wasmtime or tokio's runtime (a `oneshot` channel carries each reply).

mod postgres;
pub mod records;
pub mod rules;
mod sqlite;
pub mod tool;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use postgres::PostgresStore;
pub use records::{
    Admission, AnswerOutcome, CancelOutcome, ClaimRequest, CycleRecord, Decision, Event, EventKind, JobRecord,
    JobSummary, Lease, ListFilter, NewJob, NewQuestion, NewRun, NewTool, Outcome, Park, Renewal, ReviewOutcome,
    ReviewRecord, Started, SubmissionOutcome, ToolEvent, ToolHistory, ToolRecord, ToolStatus,
};
pub use sqlite::SqliteStore;
pub use tool::{Expect, ImportCheck, Manifest, ManifestError, Report, TestCase, TestReport, ToolLimits, Verdict};

use converge_engine::Status;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A write's answer, sent after its transaction commits. Await it, call `blocking_recv`, or drop it.
pub type Reply<T> = tokio::sync::oneshot::Receiver<Result<T, StoreError>>;

/// Called with each event after the transaction holding it commits (the service feeds live streams from it).
pub type OnCommit = Arc<dyn Fn(&Event) + Send + Sync>;

/// What a shared store tells each process of changes any process committed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// An event was appended to a job's trail. Only its job, sequence number, kind and attempt travel: `data` is
    /// empty, read the trail for it.
    Event(Event),
    /// A job became claimable (admitted, answered, cancelled while waiting, given back).
    Claimable,
    /// A client asked to cancel this job.
    Cancel(String),
    /// A tool's record changed (a submission or a review).
    Tool {
        /// Its tenant.
        tenant: String,
        /// Its digest.
        digest: String,
    },
}

/// Called with each [`Notice`].
pub type OnNotice = Arc<dyn Fn(&Notice) + Send + Sync>;

/// A store failure. The store's own state is never half-written: a failed write is rolled back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written; `context` says what was being done.
    #[error("store: {context}: {message}")]
    Db {
        /// What the store was doing (`opening /data/converge.db`, `reading job j1`...).
        context: String,
        /// What the database said.
        message: String,
    },
    /// There is no store where one was expected (`converge replay` on an empty data directory).
    #[error("store: {0}: no store here")]
    Missing(String),
    /// The database was written by a newer version of Converge.
    #[error("store: {location}: schema version {found} is newer than this build's {supported}")]
    NewerSchema {
        /// The file or database.
        location: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The writer has stopped (the process is shutting down or the database failed).
    #[error("store: the writer has stopped")]
    Closed,
    /// A stored row is not what this version of the store wrote.
    #[error("store: corrupt row for {what}: {message}")]
    Corrupt {
        /// The row (`job j1`, `tool <digest>`).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The run's lease is gone: another claim took the job (this one expired, was released, or the job ended).
    /// Nothing of the write was applied; the run must stop.
    #[error("store: the lease on job {0} is gone; another run owns it")]
    LeaseLost(String),
}

/// Wait for a reply on a thread that may block (never the async runtime).
///
/// # Errors
/// The write failed, or the store stopped before answering.
pub fn wait<T>(reply: Reply<T>) -> Result<T, StoreError> {
    reply.blocking_recv().map_err(|_| StoreError::Closed)?
}

/// The durable store. Writes return a [`Reply`] resolved after commit; reads block briefly.
pub trait Store: Send + Sync {
    /// Whether other processes claim jobs from this store too (a shared queue): workers then claim any
    /// claimable job instead of the ones their own process queued.
    fn shared(&self) -> bool {
        false
    }

    /// Tell `on` of every change any process commits, from now on (a shared store; a store of one process has
    /// nothing to add to what its own writes answer, and to its commit hook).
    fn listen(&self, on: OnNotice) {
        drop(on);
    }

    /// Stop: finish the writes already sent, then refuse the rest ([`StoreError::Closed`]).
    fn close(&self) {}

    /// Admit a job (queued), honouring its idempotency key.
    fn create_job(&self, job: NewJob) -> Reply<Admission>;
    /// Store a job and a run of it that started before anything was stored (see [`NewRun`]), in one write: the
    /// job as [`Store::create_job`] admits it, claimed under `run.lease` (its `started` event), its components,
    /// its cycles, and — with `run.stop` — its stop, as [`Store::park`] or [`Store::finish`] would store it.
    /// The trail and the record are those of the same run written step by step. A job with an idempotency key
    /// that names another job stores nothing and returns that admission.
    fn create_run(&self, job: NewJob, run: NewRun) -> Reply<Admission>;
    /// Claim a job to run: the one named, or the oldest claimable one — queued, or running under a lease that
    /// expired. The job becomes `running` under a fresh [`Lease`]; a `started` event records the attempt. A job
    /// whose last [`ClaimRequest::max_attempts`] runs ended without a stop is ended instead (`agent_failed`,
    /// `attempts_exhausted`) and not returned. `None`: nothing to claim.
    fn claim(&self, request: ClaimRequest) -> Reply<Option<Started>>;
    /// Record the components the run uses (names and digests, for audits and replays). Fenced.
    fn begin(&self, id: &str, lease: &Lease, components: BTreeMap<String, String>, now_ms: u64) -> Reply<()>;
    /// Extend the run's lease by `lease_ms`; says whether it is still held, and whether a cancel was asked for.
    fn renew(&self, id: &str, lease: &Lease, lease_ms: u64, now_ms: u64) -> Reply<Renewal>;
    /// Record cycles' traces and the questions they opened, in order. A cycle already recorded (a job run again
    /// after a restart) is skipped, so the trail holds each cycle once. Fenced.
    fn cycles(&self, id: &str, lease: &Lease, cycles: Vec<CycleRecord>, now_ms: u64) -> Reply<()>;
    /// The job waits for answers. Stored as `waiting` (the lease ends) unless answers arrived that are not in
    /// `seen`. Fenced.
    fn park(&self, id: &str, lease: &Lease, seen: Vec<String>, outcome: Outcome) -> Reply<Park>;
    /// The job ended: store its result and end the lease. Fenced.
    fn finish(&self, id: &str, lease: &Lease, outcome: Outcome) -> Reply<()>;
    /// Give the job back, unfinished and claimable at once (a draining process). Fenced.
    fn release(&self, id: &str, lease: &Lease, now_ms: u64) -> Reply<()>;
    /// Answer an open question of a job the tenant owns.
    fn answer(&self, tenant: &str, id: &str, question: &str, answer: &str, now_ms: u64) -> Reply<AnswerOutcome>;
    /// Ask to cancel a job the tenant owns.
    fn cancel(&self, tenant: &str, id: &str, now_ms: u64) -> Reply<CancelOutcome>;

    /// A job, if it exists and (when `tenant` is given) belongs to the tenant.
    ///
    /// # Errors
    /// The database cannot be read.
    fn job(&self, tenant: Option<&str>, id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// A page of jobs, newest first.
    ///
    /// # Errors
    /// The database cannot be read.
    fn list(&self, tenant: Option<&str>, filter: &ListFilter) -> Result<Vec<JobSummary>, StoreError>;
    /// A job's answers by question id.
    ///
    /// # Errors
    /// The database cannot be read.
    fn answers(&self, id: &str) -> Result<BTreeMap<String, String>, StoreError>;
    /// A job's events after `after`, in order.
    ///
    /// # Errors
    /// The database cannot be read.
    fn events(&self, id: &str, after: u64) -> Result<Vec<Event>, StoreError>;
    /// Jobs to run after a start ([`rules::resumes_at_start`]), in submission order.
    ///
    /// # Errors
    /// The database cannot be read.
    fn unfinished(&self) -> Result<Vec<String>, StoreError>;
    /// Jobs waiting to be claimed: the depth of the queue this store holds.
    ///
    /// # Errors
    /// The database cannot be read.
    fn queued(&self) -> Result<u64, StoreError>;
    /// Jobs by status.
    ///
    /// # Errors
    /// The database cannot be read.
    fn counts(&self) -> Result<BTreeMap<Status, u64>, StoreError>;
    /// Submission time (Unix ms) of the oldest queued job.
    ///
    /// # Errors
    /// The database cannot be read.
    fn oldest_queued(&self) -> Result<Option<u64>, StoreError>;
    /// Whether the database answers.
    ///
    /// # Errors
    /// It does not.
    fn ping(&self) -> Result<(), StoreError>;

    /// Record a validation ([`rules::submission`] decides what it changes) and return the record as it is now.
    fn put_tool(&self, tool: NewTool) -> Reply<ToolRecord>;
    /// Record a human decision on a tool of `tenant` ([`rules::review`] decides whether it applies). Another
    /// tenant's tool is [`ReviewOutcome::UnknownTool`].
    fn review_tool(&self, tenant: &str, digest: &str, review: ReviewRecord) -> Reply<ReviewOutcome>;
    /// Every stored tool of `tenant` (of every tenant, with `None`), in the order they were first stored.
    ///
    /// # Errors
    /// The store cannot be read.
    fn tools(&self, tenant: Option<&str>) -> Result<Vec<ToolRecord>, StoreError>;
    /// The tool `digest` of `tenant`, if it has one.
    ///
    /// # Errors
    /// The store cannot be read.
    fn tool(&self, tenant: &str, digest: &str) -> Result<Option<ToolRecord>, StoreError>;
    /// The history of the tool `digest` of `tenant`, oldest first (empty for a tool it does not have).
    ///
    /// # Errors
    /// The store cannot be read.
    fn tool_history(&self, tenant: &str, digest: &str) -> Result<Vec<ToolEvent>, StoreError>;
    /// The component bytes of a tool of `tenant` that may become callable.
    ///
    /// # Errors
    /// The store cannot be read.
    fn tool_component(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
}
