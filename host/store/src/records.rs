//! The typed records every backend reads and writes. Kinds and statuses are enums, never strings compared to
//! literals; their wire names are the `snake_case` serde names (and `as_str`), which is also how they are
//! stored.

use crate::tool::{Manifest, Report, Verdict};
use converge_engine::Status;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// The W3C `traceparent` the job was submitted under (already checked), so every run of the job, on any
    /// worker or replica, continues that trace. Never part of the spec, its hash or the result.
    pub traceparent: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Names and digests of the components of its last start.
    pub components: BTreeMap<String, String>,
    /// Its context hash, when waiting or ended.
    pub context_hash: Option<String>,
    /// The SPEC §4 result JSON, when waiting or ended.
    pub result: Option<String>,
    /// The W3C `traceparent` it was submitted under ([`NewJob::traceparent`]).
    pub traceparent: Option<String>,
}

/// A row of a job listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// Its position in submission order: what a page's cursor names.
    #[serde(skip)]
    pub seq: i64,
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

/// A worker's hold on a job while it runs it. The token, fresh at every claim, fences every write of the run:
/// a write that does not carry the job's current token is refused ([`StoreError::LeaseLost`](crate::StoreError)),
/// so a worker that lost its lease (it paused, its replica was cut off) writes nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Random, unguessable, fresh at each claim.
    pub token: String,
    /// Which claim of the job this is: 1, 2, ...
    pub attempt: u32,
}

/// What a worker asks to claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Who claims (a replica's name; stored with the lease, for operators).
    pub owner: String,
    /// This job, or (`None`) the oldest claimable one.
    pub job: Option<String>,
    /// How long the lease holds without a renewal.
    pub lease_ms: u64,
    /// A job whose last runs ended this many times without a stop (the process died, the lease expired) is not
    /// run again: it ends `agent_failed` with error kind `attempts_exhausted`.
    pub max_attempts: u32,
    /// Unix ms, for the records (a backend with a shared clock uses its own for the lease).
    pub now_ms: u64,
}

/// A run of a job that was not stored yet when it started: the client waits for its result (`?wait=`), so
/// nothing was promised before its stop. [`Store::create_run`](crate::Store::create_run) stores the job, its
/// claim under this run's lease, and what the run did, in one write.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Who runs it (stored with the lease, for operators).
    pub owner: String,
    /// The run's lease: attempt 1, a token the service drew.
    pub lease: Lease,
    /// How long the lease holds without a renewal, from this write (while the job still runs).
    pub lease_ms: u64,
    /// Unix ms when the run started.
    pub started_ms: u64,
    /// The components the run uses (names and digests).
    pub components: BTreeMap<String, String>,
    /// The cycles it ran so far, in order.
    pub cycles: Vec<CycleRecord>,
    /// Where it stopped: an end, or `waiting` for answers (the job has none yet: nobody knew it). `None`: it
    /// still runs, under `lease`, and its later writes are fenced by it.
    pub stop: Option<Outcome>,
    /// Unix ms of this write.
    pub now_ms: u64,
}

/// A claimed job: a worker's start of it.
#[derive(Debug, Clone)]
pub struct Started {
    /// The job as stored (status now `running`).
    pub record: JobRecord,
    /// The answers given so far, by question id.
    pub answers: BTreeMap<String, String>,
    /// The lease the run holds.
    pub lease: Lease,
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// The lease is still this run's, and extended.
    pub held: bool,
    /// A client asked to cancel the job.
    pub cancel_requested: bool,
}

/// The kind of an entry of a job's audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Admitted (`{"status": "queued"}`).
    Created,
    /// A worker started it (`{"attempt": n}`).
    Started,
    /// A cycle ran (its trace).
    Cycle,
    /// A question was answered (`{"question": id}`).
    Answer,
    /// A client asked to cancel it (`{"status": <status when asked>}`).
    CancelRequested,
    /// It waits for answers (`{"status": "waiting", "cycles", "context_hash"}`).
    Waiting,
    /// It ended (`{"status", "cycles", "context_hash"}`); nothing follows.
    End,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 7] =
        [Self::Created, Self::Started, Self::Cycle, Self::Answer, Self::CancelRequested, Self::Waiting, Self::End];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Started => "started",
            Self::Cycle => "cycle",
            Self::Answer => "answer",
            Self::CancelRequested => "cancel_requested",
            Self::Waiting => "waiting",
            Self::End => "end",
        }
    }

    /// The kind with this wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the job stops here (ends, or waits for answers).
    pub fn is_stop(self) -> bool {
        matches!(self, Self::End | Self::Waiting)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a job's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The job.
    pub job: String,
    /// Its position in the job's trail, from 1.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The payload, JSON (see [`EventKind`]).
    pub data: String,
    /// Unix ms.
    pub at_ms: u64,
    /// The claim whose run wrote it (0: written by a client's request or the store itself). Along a job's trail
    /// this never decreases: a run that lost its lease writes nothing after the next claim.
    pub attempt: u32,
}

/// A job's stop, to store.
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

/// Where a stored tool stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    /// Callable by its tenant's jobs.
    Accepted,
    /// Waits for a human decision.
    NeedsReview,
    /// Never callable.
    Rejected,
    /// Was accepted; a reviewer withdrew it.
    Revoked,
}

impl ToolStatus {
    /// Every status.
    pub const ALL: [Self; 4] = [Self::Accepted, Self::NeedsReview, Self::Rejected, Self::Revoked];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::NeedsReview => "needs_review",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
        }
    }

    /// The status with this wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl From<Verdict> for ToolStatus {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Accepted => Self::Accepted,
            Verdict::NeedsReview => Self::NeedsReview,
            Verdict::Rejected => Self::Rejected,
        }
    }
}

impl std::fmt::Display for ToolStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Make a tool that needs review callable.
    Approve,
    /// Never make a tool that needs review callable.
    Reject,
    /// Withdraw an accepted tool: jobs started from then on cannot call it (its bytes and record stay, for the
    /// audit and for replaying the jobs that called it).
    Revoke,
}

impl Decision {
    /// Every decision.
    pub const ALL: [Self; 3] = [Self::Approve, Self::Reject, Self::Revoke];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Revoke => "revoke",
        }
    }

    /// The decision with this wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }
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
    /// The manifest.
    pub manifest: Manifest,
    /// The pipeline's report (its verdict decides the status).
    pub report: Report,
    /// The component bytes; kept only for a tool that may become callable.
    pub component: Option<Vec<u8>>,
    /// When.
    pub now_ms: u64,
}

/// A human decision on a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewRecord {
    /// What was decided.
    pub decision: Decision,
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
    /// Where it stands.
    pub status: ToolStatus,
    /// What the pipeline said.
    pub verdict: Verdict,
    /// The manifest it was validated with.
    pub manifest: Manifest,
    /// The report.
    pub report: Report,
    /// First stored.
    pub created_ms: u64,
    /// Last changed.
    pub updated_ms: u64,
    /// When it became callable (the order "latest accepted" follows).
    pub accepted_ms: Option<u64>,
    /// Every review, oldest first.
    pub reviews: Vec<ReviewRecord>,
}

impl ToolRecord {
    /// `name@digest`: how this tool resolves exactly.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.name, self.digest)
    }
}

/// What a submission did to the stored record of its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubmissionOutcome {
    /// First submission of this component by this tenant.
    New,
    /// The same component with the same manifest: nothing changed (the pipeline is deterministic).
    Unchanged,
    /// Another manifest: the new report replaced the stored one.
    Replaced,
    /// Another manifest, but a reviewer rejected or revoked this component: the record stays as it was.
    KeptByReview,
}

/// One entry of a tool's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum ToolHistory {
    /// A submission.
    Submitted {
        /// The manifest's name.
        name: String,
        /// The pipeline's verdict.
        verdict: Verdict,
        /// The report's reasons.
        reasons: Vec<String>,
        /// SHA-256 of the manifest's canonical JSON.
        manifest_sha256: String,
        /// What it did to the record.
        outcome: SubmissionOutcome,
        /// The status after it.
        status: ToolStatus,
    },
    /// A review.
    Reviewed {
        /// The decision.
        decision: Decision,
        /// Who decided.
        reviewer: String,
        /// Why.
        comment: String,
        /// The status after it.
        status: ToolStatus,
    },
}

/// One entry of a tool's history, numbered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolEvent {
    /// 1, 2, ... per tool.
    pub seq: u64,
    /// What happened: `kind` (`submitted` or `reviewed`) and its `data`.
    #[serde(flatten)]
    pub entry: ToolHistory,
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
    NotPending(ToolStatus),
}
