//! The durable store behind the service: jobs, their events (the audit trail), questions and answers, and
//! idempotency keys, behind one trait so another backend (PostgreSQL) can follow.
//!
//! Writes go to one writer and are committed in groups: a call returns a [`Reply`] that resolves only after the
//! transaction holding the write has committed, so "acknowledged" always means "on disk". Reads are plain
//! blocking calls. The store never sees a job's engine state: a job is its spec plus its answers, and the
//! service rebuilds everything else by running it again (the engine is deterministic).
//!
//! The store never decides anything about the engine; it only makes the service's state transitions atomic.

mod sqlite;

pub use sqlite::SqliteStore;

use converge_engine::Status;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A write's answer, sent after its transaction commits. Await it, call `blocking_recv`, or drop it.
pub type Reply<T> = tokio::sync::oneshot::Receiver<Result<T, StoreError>>;

/// A store failure. The store's own state is never half-written: a failed write is rolled back.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("store: {0}")]
    Db(String),
    /// The writer has stopped (the process is shutting down or the database failed).
    #[error("store: the writer has stopped")]
    Closed,
    /// A stored row is not what this version of the store wrote.
    #[error("store: corrupt row for job {job}: {message}")]
    Corrupt {
        /// The job.
        job: String,
        /// What is wrong.
        message: String,
    },
}

/// A job to admit.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// The spec as canonical JSON.
    pub spec: String,
    /// SHA-256 of the canonical spec (idempotency compares it).
    pub spec_hash: String,
    /// The goal, for listings.
    pub goal: String,
    /// The spec's labels, for filters.
    pub labels: BTreeMap<String, String>,
    /// The client's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// Unix time in milliseconds.
    pub now_ms: u64,
}

/// What admitting a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The job is stored, queued.
    Created,
    /// The key was used before with the same spec: that job, with its current status.
    Existing {
        /// Its id.
        id: String,
        /// Its status.
        status: Status,
    },
    /// The key was used before with another spec.
    KeyConflict {
        /// The job the key belongs to.
        id: String,
    },
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Its id.
    pub id: String,
    /// Its position in submission order (the listing cursor).
    pub seq: i64,
    /// The owning tenant.
    pub tenant: String,
    /// Its status.
    pub status: Status,
    /// The spec as canonical JSON.
    pub spec: String,
    /// The goal.
    pub goal: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Submitted, Unix ms.
    pub created_ms: u64,
    /// Last changed, Unix ms.
    pub updated_ms: u64,
    /// How many times a worker started it.
    pub attempts: u32,
    /// Cycles recorded so far.
    pub cycles: u32,
    /// A client asked to cancel it.
    pub cancel_requested: bool,
    /// Names and digests of the components of its last start, as JSON.
    pub components: Option<String>,
    /// Its context hash, when waiting or ended.
    pub context_hash: Option<String>,
    /// The SPEC §4 result JSON, when waiting or ended.
    pub result: Option<String>,
}

/// A row of a job listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobSummary {
    /// The job id.
    pub id: String,
    /// Its status.
    #[schema(value_type = String)]
    pub status: Status,
    /// The goal.
    pub goal: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Cycles recorded so far.
    pub cycles: u32,
    /// Its context hash, when waiting or ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_hash: Option<String>,
    /// Submitted, Unix ms.
    pub created_ms: u64,
    /// Last changed, Unix ms.
    pub updated_ms: u64,
    #[serde(skip)]
    pub(crate) seq: i64,
}

/// Which jobs to list: newest first, `limit` at most, older than `before` (a cursor from a previous page).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only jobs with this status.
    pub status: Option<Status>,
    /// Only jobs with this label set to this value.
    pub label: Option<(String, String)>,
    /// Only jobs submitted before the job with this sequence number.
    pub before: Option<i64>,
    /// The page size.
    pub limit: u32,
}

/// A question a job asked, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQuestion {
    /// The question id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// The asking agent.
    pub agent: String,
}

/// One cycle of a job, to record.
#[derive(Debug, Clone)]
pub struct CycleRecord {
    /// The cycle, from 1.
    pub cycle: u32,
    /// Its trace, JSON.
    pub trace: String,
    /// The questions it opened.
    pub questions: Vec<NewQuestion>,
}

/// What answering did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// Recorded. `resume`: the job was waiting and now has every answer; queue it.
    Recorded {
        /// Queue the job again.
        resume: bool,
    },
    /// No such job for this tenant.
    UnknownJob,
    /// The job never asked this question (or has not recorded it yet).
    UnknownQuestion,
    /// The question has an answer already.
    AlreadyAnswered,
    /// The job has ended.
    Finished(Status),
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Recorded. `requeue`: the job was waiting, queue it so a worker ends it.
    Requested {
        /// Its status when asked.
        status: Status,
        /// Queue the job again.
        requeue: bool,
    },
    /// No such job for this tenant.
    UnknownJob,
    /// The job has ended.
    Finished(Status),
}

/// What parking a job that waits for answers did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Park {
    /// The job is stored as `waiting`.
    Parked,
    /// Answers arrived that the worker had not seen: apply them and go on.
    Answers(BTreeMap<String, String>),
}

/// A worker's start of a job.
#[derive(Debug, Clone)]
pub struct Started {
    /// The job as stored (status now `running`).
    pub record: JobRecord,
    /// The answers given so far, by question id.
    pub answers: BTreeMap<String, String>,
}

/// One entry of a job's audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The job.
    pub job: String,
    /// Its position in the job's trail, from 1.
    pub seq: u64,
    /// `created`, `started`, `cycle`, `answer`, `cancel_requested`, `waiting` or `end`.
    pub kind: String,
    /// The payload, JSON.
    pub data: String,
    /// Unix ms.
    pub at_ms: u64,
}

/// A job's end, to store.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The terminal status, or `waiting`.
    pub status: Status,
    /// Cycles run.
    pub cycles: u32,
    /// The context hash.
    pub context_hash: String,
    /// The SPEC §4 result JSON.
    pub result: String,
    /// Unix ms.
    pub now_ms: u64,
}

/// A validated tool to record (SPEC §6).
#[derive(Debug, Clone)]
pub struct NewTool {
    /// SHA-256 of the component, lowercase hex: the tool's id within its tenant.
    pub digest: String,
    /// The manifest's name.
    pub name: String,
    /// Who submitted it.
    pub tenant: String,
    /// The pipeline's verdict: `accepted`, `needs_review` or `rejected`.
    pub verdict: String,
    /// The manifest, as JSON.
    pub manifest: String,
    /// The report, as JSON.
    pub report: String,
    /// The component bytes; kept only for a tool that may become callable.
    pub component: Option<Vec<u8>>,
    /// When.
    pub now_ms: u64,
}

/// A human decision on a tool that needs review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewRecord {
    /// `approve`, `reject` or `revoke`.
    pub decision: String,
    /// Who decided.
    pub reviewer: String,
    /// Why.
    pub comment: String,
    /// The tenant whose token made the request.
    pub tenant: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A stored tool, without its component bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRecord {
    /// SHA-256 of the component.
    pub digest: String,
    /// Its name.
    pub name: String,
    /// Who submitted it: the tenant it belongs to. Only that tenant's jobs can call it, and only that tenant
    /// can list or review it.
    pub tenant: String,
    /// Where it stands: `accepted` (callable), `needs_review`, `rejected`, or `revoked` (was callable; a reviewer
    /// withdrew it).
    pub status: String,
    /// What the pipeline said.
    pub verdict: String,
    /// The manifest, as JSON.
    pub manifest: String,
    /// The report, as JSON.
    pub report: String,
    /// First stored.
    pub created_ms: u64,
    /// Last changed.
    pub updated_ms: u64,
    /// When it became callable (the order "latest accepted" follows).
    pub accepted_ms: Option<u64>,
    /// Every review, oldest first.
    pub reviews: Vec<ReviewRecord>,
}

/// One entry of a tool's history: a submission (`submitted`: name, verdict, reasons, the manifest's SHA-256,
/// `outcome` `new` / `unchanged` / `replaced` / `kept_by_review`, the resulting status) or a review (`reviewed`:
/// decision, reviewer, comment, the resulting status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolEvent {
    /// 1, 2, ... per tool.
    pub seq: u64,
    /// `submitted` or `reviewed`.
    pub kind: String,
    /// What happened.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// The outcome of a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// Recorded; the tool as it is now.
    Recorded(Box<ToolRecord>),
    /// No such tool.
    UnknownTool,
    /// The decision does not apply to the tool's status (`approve` and `reject` need `needs_review`, `revoke`
    /// needs `accepted`); its status.
    NotPending(String),
}

/// The durable store. Writes return a [`Reply`] resolved after commit; reads block briefly.
pub trait Store: Send + Sync {
    /// Admit a job (queued), honouring its idempotency key.
    fn create_job(&self, job: NewJob) -> Reply<Admission>;
    /// A worker starts the job: status `running`, attempt counted, the components it runs recorded.
    fn start(&self, id: &str, components: String, now_ms: u64) -> Reply<Started>;
    /// Record cycles' traces and the questions they opened, in order. A cycle already recorded (a job run again
    /// after a restart) is skipped, so the trail holds each cycle once.
    fn cycles(&self, id: &str, cycles: Vec<CycleRecord>, now_ms: u64) -> Reply<()>;
    /// The job waits for answers. Stored as `waiting` unless answers arrived that are not in `seen`.
    fn park(&self, id: &str, seen: Vec<String>, outcome: Outcome) -> Reply<Park>;
    /// The job ended: store its result.
    fn finish(&self, id: &str, outcome: Outcome) -> Reply<()>;
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
    /// Jobs to run after a start: queued and running ones, in submission order.
    ///
    /// # Errors
    /// The database cannot be read.
    fn unfinished(&self) -> Result<Vec<String>, StoreError>;
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

    /// Record a validation. The same component with the same manifest is a no-op that returns the stored
    /// record (the pipeline is deterministic); with another manifest the new report replaces the old, unless a
    /// reviewer rejected or revoked that component (then it is a no-op too).
    fn put_tool(&self, tool: NewTool) -> Reply<ToolRecord>;
    /// Record a human decision on a tool of `tenant`: on one that needs review, `approve` makes it callable,
    /// `reject` never; on an accepted one, `revoke` makes it uncallable from then on. Another tenant's tool is
    /// [`ReviewOutcome::UnknownTool`].
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
