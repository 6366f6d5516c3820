//! The rules every backend applies, written once: what a submission does to a stored tool, which review
//! decisions apply to which status, when an answer or a cancel puts a job back in the queue, which jobs a
//! fresh start resumes, and the payload of each audit event. A backend reads the rows, asks these functions,
//! and writes what they say inside one transaction; none of them touches a database.

use crate::records::{
    ClaimRequest, Decision, EventKind, NewJob, NewRun, Outcome, SubmissionOutcome, ToolRecord, ToolStatus,
};
use crate::tool::{Manifest, Verdict};
use converge_engine::Status;
use sha2::{Digest, Sha256};

/// What submitting `manifest` for a component does, given the tenant's stored record of it. The same
/// submission again changes nothing; nor does any submission of a component a reviewer rejected or revoked (a
/// new manifest must not undo a human decision).
pub fn submission(existing: Option<&ToolRecord>, manifest: &Manifest) -> SubmissionOutcome {
    match existing {
        None => SubmissionOutcome::New,
        Some(e) if e.manifest == *manifest => SubmissionOutcome::Unchanged,
        Some(e) if e.reviews.iter().any(|r| r.decision != Decision::Approve) => SubmissionOutcome::KeptByReview,
        Some(_) => SubmissionOutcome::Replaced,
    }
}

/// Whether a submission with this outcome writes the new report over the record.
pub fn writes_report(outcome: SubmissionOutcome) -> bool {
    matches!(outcome, SubmissionOutcome::New | SubmissionOutcome::Replaced)
}

/// The status a fresh report gives a tool, and whether it is callable from then on (it was accepted).
pub fn status_of_verdict(verdict: Verdict) -> ToolStatus {
    verdict.into()
}

/// The status `decision` moves a tool of status `from` to, or `None` when the decision does not apply:
/// `approve` and `reject` decide a tool that waits for review; `revoke` withdraws one that is callable.
pub fn review(from: ToolStatus, decision: Decision) -> Option<ToolStatus> {
    match (from, decision) {
        (ToolStatus::NeedsReview, Decision::Approve) => Some(ToolStatus::Accepted),
        (ToolStatus::NeedsReview, Decision::Reject) => Some(ToolStatus::Rejected),
        (ToolStatus::Accepted, Decision::Revoke) => Some(ToolStatus::Revoked),
        _ => None,
    }
}

/// Whether a tool of this status keeps its component bytes. A rejected tool never ran in a job, so its bytes
/// go; a revoked one keeps them, for the audit and for replaying the jobs that called it.
pub fn keeps_component(status: ToolStatus) -> bool {
    status != ToolStatus::Rejected
}

/// SHA-256 of a manifest's canonical JSON, as a tool's history records it.
pub fn manifest_sha256(manifest: &Manifest) -> String {
    let json = serde_json::to_string(manifest).unwrap_or_default();
    converge_engine::hex(&Sha256::digest(json.as_bytes()))
}

/// Whether a job of `status` that gets its last missing answer (no question left open) goes back to the queue.
/// A running job keeps running; it takes the answer when it waits.
pub fn resumes_on_answer(status: Status, open_after: u64) -> bool {
    status == Status::Waiting && open_after == 0
}

/// Whether a cancel of a job of `status` puts it back in the queue (a waiting job: a worker ends it at once).
/// A queued job ends at its start, a running one at its next cycle.
pub fn requeues_on_cancel(status: Status) -> bool {
    status == Status::Waiting
}

/// Whether a job of `status` is run again when a process starts: it was admitted or running when the last one
/// stopped. A waiting job waits on; an ended one is done.
pub fn resumes_at_start(status: Status) -> bool {
    matches!(status, Status::Queued | Status::Running)
}

/// The statuses [`resumes_at_start`] accepts, for queries.
pub const RESUMED_AT_START: [Status; 2] = [Status::Queued, Status::Running];

/// Whether a job of `status` may be claimed: queued, or running under a lease that expired (its run died or was
/// cut off; another may take it over).
pub fn claimable(status: Status, lease_expired: bool) -> bool {
    status == Status::Queued || (status == Status::Running && lease_expired)
}

/// Whether a job whose last `open_runs` runs ended without a stop (a park, an end or a release) has used up
/// `max_attempts`: it is not run again, so a job that kills its process cannot crash-loop the service.
pub fn attempts_exhausted(open_runs: u32, max_attempts: u32) -> bool {
    open_runs >= max_attempts.max(1)
}

/// The end of a job whose attempts are exhausted: `agent_failed`, error kind `attempts_exhausted`.
pub fn exhausted(id: &str, runs: u32, now_ms: u64) -> Outcome {
    let error = converge_engine::ErrorInfo {
        kind: "attempts_exhausted".into(),
        message: format!(
            "the job's last {runs} runs ended without finishing (the process died or lost its lease each time); \
             it is not run again"
        ),
    };
    let result = converge_engine::JobResult::empty(id, Status::AgentFailed, Some(error));
    Outcome {
        status: Status::AgentFailed,
        cycles: 0,
        context_hash: result.context_hash.clone(),
        result: serde_json::to_string(&result).unwrap_or_default(),
        now_ms,
    }
}

/// The claim a [`NewRun`] made of its job when it started: by id, by the run's owner, at its start, never
/// refused for attempts (it is the job's first).
pub fn run_claim(job: &NewJob, run: &NewRun) -> ClaimRequest {
    ClaimRequest {
        owner: run.owner.clone(),
        job: Some(job.id.clone()),
        lease_ms: run.lease_ms,
        max_attempts: u32::MAX,
        now_ms: run.started_ms,
    }
}

/// A fresh lease token: 128 random bits, hex.
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The payloads of the audit events, one shape per [`EventKind`].
pub mod payload {
    use super::{EventKind, Outcome, Status};

    /// `created`: the job is queued.
    pub fn created() -> (EventKind, String) {
        (EventKind::Created, serde_json::json!({"status": Status::Queued}).to_string())
    }

    /// `started`: attempt `attempt` (1, 2, ...) of the job, claimed by `owner`.
    pub fn started(attempt: u32, owner: &str) -> (EventKind, String) {
        (EventKind::Started, serde_json::json!({"attempt": attempt, "owner": owner}).to_string())
    }

    /// `answer`: `question` got its answer (the text is in the job's answers, not in the trail).
    pub fn answer(question: &str) -> (EventKind, String) {
        (EventKind::Answer, serde_json::json!({"question": question}).to_string())
    }

    /// `cancel_requested`, with the status when asked.
    pub fn cancel_requested(status: Status) -> (EventKind, String) {
        (EventKind::CancelRequested, serde_json::json!({"status": status}).to_string())
    }

    /// `waiting` or `end`: where the job stopped.
    pub fn stop(outcome: &Outcome) -> (EventKind, String) {
        let kind = if outcome.status == Status::Waiting { EventKind::Waiting } else { EventKind::End };
        let data = serde_json::json!({
            "status": outcome.status,
            "cycles": outcome.cycles,
            "context_hash": outcome.context_hash,
        });
        (kind, data.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{review, submission};
    use crate::records::{Decision, ReviewRecord, SubmissionOutcome, ToolRecord, ToolStatus};
    use crate::tool::{Manifest, Report, ToolLimits, Verdict};

    fn manifest(name: &str) -> Manifest {
        Manifest {
            name: name.into(),
            description: String::new(),
            tests: Vec::new(),
            requested: Vec::new(),
            limits: None,
        }
    }

    fn record(status: ToolStatus, reviews: &[Decision]) -> ToolRecord {
        let report = Report {
            verdict: Verdict::NeedsReview,
            reasons: Vec::new(),
            name: "t".into(),
            description: String::new(),
            digest: "d".into(),
            size: 0,
            imports: Vec::new(),
            attempts: Vec::new(),
            tests: Vec::new(),
            limits: ToolLimits::default(),
            requested: Vec::new(),
        };
        ToolRecord {
            digest: "d".into(),
            name: "t".into(),
            tenant: "a".into(),
            status,
            verdict: Verdict::NeedsReview,
            manifest: manifest("t"),
            report,
            created_ms: 0,
            updated_ms: 0,
            accepted_ms: None,
            reviews: reviews
                .iter()
                .map(|d| ReviewRecord {
                    decision: *d,
                    reviewer: "r".into(),
                    comment: String::new(),
                    tenant: "a".into(),
                    at_ms: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn a_human_rejection_survives_any_resubmission() {
        let m = manifest("t");
        assert_eq!(submission(None, &m), SubmissionOutcome::New);
        assert_eq!(submission(Some(&record(ToolStatus::NeedsReview, &[])), &m), SubmissionOutcome::Unchanged);
        let other = Manifest { description: "other".into(), ..manifest("t") };
        assert_eq!(submission(Some(&record(ToolStatus::NeedsReview, &[])), &other), SubmissionOutcome::Replaced);
        assert_eq!(
            submission(Some(&record(ToolStatus::Accepted, &[Decision::Approve])), &other),
            SubmissionOutcome::Replaced
        );
        for kept in [Decision::Reject, Decision::Revoke] {
            let r = record(ToolStatus::Rejected, &[kept]);
            assert_eq!(submission(Some(&r), &other), SubmissionOutcome::KeptByReview);
        }
    }

    #[test]
    fn decisions_apply_only_to_their_status() {
        use Decision::{Approve, Reject, Revoke};
        use ToolStatus::{Accepted, NeedsReview, Rejected, Revoked};
        assert_eq!(review(NeedsReview, Approve), Some(Accepted));
        assert_eq!(review(NeedsReview, Reject), Some(Rejected));
        assert_eq!(review(Accepted, Revoke), Some(Revoked));
        for (from, d) in [
            (Accepted, Approve),
            (Accepted, Reject),
            (NeedsReview, Revoke),
            (Rejected, Approve),
            (Revoked, Approve),
            (Revoked, Revoke),
        ] {
            assert_eq!(review(from, d), None, "{from} {d:?}");
        }
    }
}
