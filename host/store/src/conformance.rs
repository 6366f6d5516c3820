//! The conformance suite: what every backend of [`Store`] must do, case by case. A backend's tests expand
//! [`conformance_tests!`](crate::conformance_tests) with a function that opens a fresh, empty store (given a
//! name unique to the case and the hook that must see each committed event), and get one `#[test]` per case.
//!
//! The cases speak only through the trait, so passing them means: the same admissions, the same answers and
//! cancels, the same listings, the same tool decisions as every other backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs, clippy::missing_panics_doc)]

use crate::records::{
    Admission, AnswerOutcome, CancelOutcome, ClaimRequest, CycleRecord, Decision, Event, EventKind, Lease, ListFilter,
    NewJob, NewQuestion, NewRun, NewTool, Outcome, Park, ReviewOutcome, ReviewRecord, Started, SubmissionOutcome,
    ToolHistory, ToolStatus,
};
use crate::tool::{Manifest, Report, ToolLimits, Verdict};
use crate::{OnCommit, Store, wait};
use converge_engine::Status;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Opens a fresh, empty store for the case named by the first argument; the hook must hear of every event
/// committed (at once, or — a shared store — soon after, without payload).
pub type Open = fn(&str, Option<OnCommit>) -> Opened;

/// A store opened for a case, with whatever must live as long as it (a throwaway server).
pub struct Opened {
    store: Box<dyn Store>,
    _guard: Option<Box<dyn Send>>,
}

impl Opened {
    /// A store that needs nothing kept.
    pub fn new(store: impl Store + 'static) -> Self {
        Self { store: Box::new(store), _guard: None }
    }

    /// A store and what must outlive it (dropped after it).
    pub fn with(store: impl Store + 'static, guard: impl Send + 'static) -> Self {
        Self { store: Box::new(store), _guard: Some(Box::new(guard)) }
    }
}

impl std::ops::Deref for Opened {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// Expand to one `#[test]` per conformance case, each on a store from `$open` (an [`Open`]).
#[macro_export]
macro_rules! conformance_tests {
    ($open:expr) => {
        $crate::conformance_tests!(@cases $open;
            admission_and_idempotency,
            jobs_belong_to_their_tenant,
            a_start_counts_the_attempt_and_records_the_components,
            cycles_are_recorded_once,
            answers_reach_a_running_job_and_resume_a_waiting_one,
            an_end_is_kept_and_closes_the_job,
            cancels_record_and_requeue_a_waiting_job,
            listings_filter_and_page_newest_first,
            a_start_resumes_queued_and_running_jobs_only,
            events_are_ordered_and_published_after_commit,
            tool_submissions_and_reviews_follow_the_rules,
            tools_belong_to_their_tenant,
            claims_take_the_oldest_job_and_expired_leases_are_taken_over,
            a_run_that_lost_its_lease_writes_nothing,
            a_job_that_keeps_dying_ends_with_its_attempts_exhausted,
            a_renewal_extends_the_lease_and_tells_of_a_cancel,
            free_text_is_kept_byte_for_byte,
            the_trace_context_travels_with_the_job,
            a_run_stored_whole_reads_as_one_stored_step_by_step,
            a_run_stored_while_it_runs_holds_its_lease,
            a_run_stored_waiting_takes_answers,
        );
    };
    (@cases $open:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case($open);
            }
        )*
    };
}

const T: &str = "tenant-a";
const OTHER: &str = "tenant-b";

fn job(id: &str, tenant: &str, key: Option<&str>, spec: &str, now_ms: u64) -> NewJob {
    NewJob {
        id: id.into(),
        tenant: tenant.into(),
        spec: spec.into(),
        spec_hash: format!("hash-of-{spec}"),
        goal: format!("goal of {id}"),
        labels: BTreeMap::from([("team".to_owned(), format!("team-{}", now_ms % 2))]),
        idempotency_key: key.map(str::to_owned),
        traceparent: None,
        now_ms,
    }
}

fn create(s: &dyn Store, id: &str, now_ms: u64) {
    assert_eq!(wait(s.create_job(job(id, T, None, "{}", now_ms))).unwrap(), Admission::Created);
}

fn outcome(status: Status, cycles: u32, now_ms: u64) -> Outcome {
    Outcome {
        status,
        cycles,
        context_hash: format!("hash-{status}-{cycles}"),
        result: format!("{{\"status\":\"{status}\"}}"),
        now_ms,
    }
}

fn cycle(n: u32, questions: &[&str]) -> CycleRecord {
    CycleRecord {
        cycle: n,
        trace: format!("{{\"cycle\":{n}}}"),
        questions: questions
            .iter()
            .map(|q| NewQuestion { id: (*q).into(), prompt: format!("what about {q}?"), agent: "asker".into() })
            .collect(),
    }
}

/// A claim of `job` (or of the oldest claimable job) at `now_ms`, with a long lease.
fn request(job: Option<&str>, now_ms: u64) -> ClaimRequest {
    ClaimRequest { owner: "replica-a".into(), job: job.map(str::to_owned), lease_ms: 60_000, max_attempts: 3, now_ms }
}

/// Claim `job` at `now_ms`; it must be claimable.
fn start(s: &dyn Store, job: &str, now_ms: u64) -> Started {
    wait(s.claim(request(Some(job), now_ms))).unwrap().unwrap_or_else(|| panic!("{job} is not claimable"))
}

fn kinds(s: &dyn Store, id: &str) -> Vec<EventKind> {
    s.events(id, 0).unwrap().into_iter().map(|e| e.kind).collect()
}

pub fn admission_and_idempotency(open: Open) {
    let s = open("admission_and_idempotency", None);
    create(&*s, "j1", 10);
    let r = s.job(None, "j1").unwrap().expect("stored");
    assert_eq!((r.status, r.tenant.as_str(), r.spec.as_str(), r.attempts, r.cycles), (Status::Queued, T, "{}", 0, 0));
    assert_eq!(r.labels.get("team").map(String::as_str), Some("team-0"));
    assert_eq!((r.created_ms, r.updated_ms, r.cancel_requested), (10, 10, false));
    assert_eq!(kinds(&*s, "j1"), [EventKind::Created]);

    assert_eq!(wait(s.create_job(job("j2", T, Some("k"), "{}", 11))).unwrap(), Admission::Created);
    assert_eq!(
        wait(s.create_job(job("j3", T, Some("k"), "{}", 12))).unwrap(),
        Admission::Existing { id: "j2".into(), status: Status::Queued },
        "same key, same spec: the first job"
    );
    assert_eq!(
        wait(s.create_job(job("j4", T, Some("k"), "{\"other\":1}", 13))).unwrap(),
        Admission::KeyConflict { id: "j2".into() },
        "same key, another spec"
    );
    assert!(s.job(None, "j3").unwrap().is_none() && s.job(None, "j4").unwrap().is_none(), "nothing written");
    assert_eq!(
        wait(s.create_job(job("j5", OTHER, Some("k"), "{}", 14))).unwrap(),
        Admission::Created,
        "keys are per tenant"
    );
    s.ping().unwrap();
}

pub fn jobs_belong_to_their_tenant(open: Open) {
    let s = open("jobs_belong_to_their_tenant", None);
    create(&*s, "j1", 1);
    assert!(s.job(Some(T), "j1").unwrap().is_some());
    assert!(s.job(Some(OTHER), "j1").unwrap().is_none());
    let page = |t| s.list(Some(t), &ListFilter { limit: 10, ..ListFilter::default() }).unwrap().len();
    assert_eq!((page(T), page(OTHER)), (1, 0));
    assert_eq!(wait(s.answer(OTHER, "j1", "q", "a", 2)).unwrap(), AnswerOutcome::UnknownJob);
    assert_eq!(wait(s.cancel(OTHER, "j1", 2)).unwrap(), CancelOutcome::UnknownJob);
    assert!(!s.job(None, "j1").unwrap().unwrap().cancel_requested);
}

pub fn a_start_counts_the_attempt_and_records_the_components(open: Open) {
    let s = open("a_start_counts_the_attempt_and_records_the_components", None);
    create(&*s, "j1", 1);
    let components = BTreeMap::from([("agent-a".to_owned(), "d1".to_owned())]);
    let started = start(&*s, "j1", 2);
    assert_eq!((started.record.status, started.record.attempts, started.lease.attempt), (Status::Running, 1, 1));
    assert!(started.answers.is_empty());
    assert!(started.lease.token.len() >= 32, "a fresh random token");
    wait(s.begin("j1", &started.lease, components.clone(), 2)).unwrap();
    let r = s.job(None, "j1").unwrap().unwrap();
    assert_eq!((r.status, r.attempts, &r.components), (Status::Running, 1, &components));
    assert!(wait(s.claim(request(Some("j1"), 3))).unwrap().is_none(), "held under a lease: not claimable");
    wait(s.release("j1", &started.lease, 4)).unwrap();
    let again = start(&*s, "j1", 5);
    assert_eq!(again.lease.attempt, 2);
    assert_ne!(again.lease.token, started.lease.token);
    let starts: Vec<String> =
        s.events("j1", 0).unwrap().into_iter().filter(|e| e.kind == EventKind::Started).map(|e| e.data).collect();
    let attempts: Vec<u64> = starts
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2]);
    assert!(wait(s.claim(request(Some("missing"), 6))).unwrap().is_none(), "a job that is not stored cannot start");
}

pub fn cycles_are_recorded_once(open: Open) {
    let s = open("cycles_are_recorded_once", None);
    create(&*s, "j1", 1);
    let lease_j1 = start(&*s, "j1", 2).lease;
    wait(s.cycles("j1", &lease_j1, vec![cycle(1, &[]), cycle(2, &[])], 3)).unwrap();
    // Run again after a restart: the same cycles come again, and one more.
    wait(s.cycles("j1", &lease_j1, vec![cycle(1, &[]), cycle(2, &[]), cycle(3, &["q"])], 4)).unwrap();
    let cycles: Vec<String> =
        s.events("j1", 0).unwrap().into_iter().filter(|e| e.kind == EventKind::Cycle).map(|e| e.data).collect();
    assert_eq!(cycles, ["{\"cycle\":1}", "{\"cycle\":2}", "{\"cycle\":3}"]);
    assert_eq!(s.job(None, "j1").unwrap().unwrap().cycles, 3);
    assert!(wait(s.cycles("j1", &lease_j1, vec![], 5)).is_ok(), "an empty batch is a no-op");
    assert_eq!(wait(s.answer(T, "j1", "q", "yes", 6)).unwrap(), AnswerOutcome::Recorded { resume: false });
}

pub fn answers_reach_a_running_job_and_resume_a_waiting_one(open: Open) {
    let s = open("answers_reach_a_running_job_and_resume_a_waiting_one", None);
    create(&*s, "j1", 1);
    let lease_j1 = start(&*s, "j1", 2).lease;
    assert_eq!(wait(s.answer(T, "j1", "q1", "a", 3)).unwrap(), AnswerOutcome::UnknownQuestion, "not asked yet");
    wait(s.cycles("j1", &lease_j1, vec![cycle(1, &["q1"])], 3)).unwrap();
    // Answered while the job still runs: recorded, not resumed (the job takes it when it waits).
    assert_eq!(wait(s.answer(T, "j1", "q1", "one", 4)).unwrap(), AnswerOutcome::Recorded { resume: false });
    assert_eq!(wait(s.answer(T, "j1", "q1", "again", 5)).unwrap(), AnswerOutcome::AlreadyAnswered);
    let park = wait(s.park("j1", &lease_j1, vec![], outcome(Status::Waiting, 1, 6))).unwrap();
    assert_eq!(park, Park::Answers(BTreeMap::from([("q1".to_owned(), "one".to_owned())])), "an answer it had not seen");
    assert_eq!(s.job(None, "j1").unwrap().unwrap().status, Status::Running, "not parked");
    wait(s.cycles("j1", &lease_j1, vec![cycle(2, &["q2"])], 7)).unwrap();
    assert_eq!(wait(s.park("j1", &lease_j1, vec!["q1".into()], outcome(Status::Waiting, 2, 8))).unwrap(), Park::Parked);
    let r = s.job(None, "j1").unwrap().unwrap();
    assert_eq!((r.status, r.context_hash.as_deref()), (Status::Waiting, Some("hash-waiting-2")));
    assert!(r.result.is_some(), "a waiting job has its result so far");
    assert_eq!(wait(s.answer(T, "j1", "q2", "two", 9)).unwrap(), AnswerOutcome::Recorded { resume: true });
    assert_eq!(s.job(None, "j1").unwrap().unwrap().status, Status::Queued, "every answer given: queued again");
    let answers = s.answers("j1").unwrap();
    assert_eq!(answers.get("q1").map(String::as_str), Some("one"));
    assert_eq!(answers.get("q2").map(String::as_str), Some("two"));
    let started = start(&*s, "j1", 10);
    assert_eq!(started.answers, answers, "a start hands over every answer");
    let trail = kinds(&*s, "j1");
    assert_eq!(trail.iter().filter(|k| **k == EventKind::Answer).count(), 2);
    assert_eq!(trail.iter().filter(|k| **k == EventKind::Waiting).count(), 1);
}

pub fn an_end_is_kept_and_closes_the_job(open: Open) {
    let s = open("an_end_is_kept_and_closes_the_job", None);
    create(&*s, "j1", 1);
    let lease_j1 = start(&*s, "j1", 2).lease;
    wait(s.cycles("j1", &lease_j1, vec![cycle(1, &["q"])], 3)).unwrap();
    wait(s.finish("j1", &lease_j1, outcome(Status::Converged, 1, 4))).unwrap();
    wait(s.finish("j1", &lease_j1, outcome(Status::Cancelled, 9, 5))).unwrap();
    let r = s.job(None, "j1").unwrap().unwrap();
    assert_eq!((r.status, r.cycles), (Status::Converged, 1), "the first end stays");
    assert_eq!(r.result.as_deref(), Some("{\"status\":\"converged\"}"));
    assert_eq!(kinds(&*s, "j1").iter().filter(|k| **k == EventKind::End).count(), 1);
    assert_eq!(wait(s.answer(T, "j1", "q", "late", 6)).unwrap(), AnswerOutcome::Finished(Status::Converged));
    assert_eq!(wait(s.cancel(T, "j1", 6)).unwrap(), CancelOutcome::Finished(Status::Converged));
    let end = s.events("j1", 0).unwrap().into_iter().find(|e| e.kind == EventKind::End).unwrap();
    let data: serde_json::Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(data, serde_json::json!({"status": "converged", "cycles": 1, "context_hash": "hash-converged-1"}));
}

pub fn cancels_record_and_requeue_a_waiting_job(open: Open) {
    let s = open("cancels_record_and_requeue_a_waiting_job", None);
    create(&*s, "queued", 1);
    assert_eq!(
        wait(s.cancel(T, "queued", 2)).unwrap(),
        CancelOutcome::Requested { status: Status::Queued, requeue: false }
    );
    assert!(s.job(None, "queued").unwrap().unwrap().cancel_requested);
    create(&*s, "waiting", 3);
    let lease_waiting = start(&*s, "waiting", 4).lease;
    wait(s.cycles("waiting", &lease_waiting, vec![cycle(1, &["q"])], 5)).unwrap();
    assert_eq!(wait(s.park("waiting", &lease_waiting, vec![], outcome(Status::Waiting, 1, 6))).unwrap(), Park::Parked);
    assert_eq!(
        wait(s.cancel(T, "waiting", 7)).unwrap(),
        CancelOutcome::Requested { status: Status::Waiting, requeue: true }
    );
    let r = s.job(None, "waiting").unwrap().unwrap();
    assert_eq!((r.status, r.cancel_requested), (Status::Queued, true));
    assert_eq!(wait(s.cancel(T, "missing", 8)).unwrap(), CancelOutcome::UnknownJob);
    assert!(kinds(&*s, "waiting").contains(&EventKind::CancelRequested));
}

pub fn listings_filter_and_page_newest_first(open: Open) {
    let s = open("listings_filter_and_page_newest_first", None);
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        create(&*s, id, i as u64);
    }
    let lease_b = start(&*s, "b", 10).lease;
    wait(s.finish("b", &lease_b, outcome(Status::Converged, 2, 11))).unwrap();
    let ids = |f: ListFilter| -> Vec<String> { s.list(Some(T), &f).unwrap().into_iter().map(|j| j.id).collect() };
    assert_eq!(ids(ListFilter { limit: 10, ..ListFilter::default() }), ["e", "d", "c", "b", "a"]);
    let first = s.list(Some(T), &ListFilter { limit: 2, ..ListFilter::default() }).unwrap();
    assert_eq!(first.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["e", "d"]);
    let before = first.last().map(|j| j.seq);
    assert_eq!(ids(ListFilter { limit: 2, before, ..ListFilter::default() }), ["c", "b"], "the next page");
    assert_eq!(ids(ListFilter { limit: 10, status: Some(Status::Converged), ..ListFilter::default() }), ["b"]);
    let label = Some(("team".to_owned(), "team-0".to_owned()));
    assert_eq!(ids(ListFilter { limit: 10, label, ..ListFilter::default() }), ["e", "c", "a"]);
    let b = s.list(Some(T), &ListFilter { limit: 10, status: Some(Status::Converged), ..ListFilter::default() });
    let b = &b.unwrap()[0];
    assert_eq!((b.cycles, b.context_hash.as_deref(), b.goal.as_str()), (2, Some("hash-converged-2"), "goal of b"));
}

pub fn a_start_resumes_queued_and_running_jobs_only(open: Open) {
    let s = open("a_start_resumes_queued_and_running_jobs_only", None);
    for (i, id) in ["queued", "running", "waiting", "ended"].iter().enumerate() {
        create(&*s, id, 100 + i as u64);
    }
    let leases: BTreeMap<&str, _> =
        ["running", "waiting", "ended"].into_iter().map(|id| (id, start(&*s, id, 200).lease)).collect();
    let (lease_waiting, lease_ended) = (&leases["waiting"], &leases["ended"]);
    wait(s.cycles("waiting", lease_waiting, vec![cycle(1, &["q"])], 201)).unwrap();
    wait(s.park("waiting", lease_waiting, vec![], outcome(Status::Waiting, 1, 202))).unwrap();
    wait(s.finish("ended", lease_ended, outcome(Status::AgentFailed, 0, 203))).unwrap();
    if s.shared() {
        // Replicas claim from the shared queue itself; nothing is handed to one process at its start.
        assert!(s.unfinished().unwrap().is_empty());
    } else {
        assert_eq!(s.unfinished().unwrap(), ["queued", "running"], "in submission order");
    }
    let counts = s.counts().unwrap();
    for (status, n) in [(Status::Queued, 1), (Status::Running, 1), (Status::Waiting, 1), (Status::AgentFailed, 1)] {
        assert_eq!(counts.get(&status).copied(), Some(n), "{status}");
    }
    assert_eq!(s.oldest_queued().unwrap(), Some(100));
}

pub fn events_are_ordered_and_published_after_commit(open: Open) {
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let s = open(
        "events_are_ordered_and_published_after_commit",
        Some(Arc::new(move |e| sink.lock().unwrap().push(e.clone()))),
    );
    // What identifies an event (a shared store's notices carry no payload).
    let ids = |events: &[Event]| -> Vec<(String, u64, EventKind, u32)> {
        events.iter().map(|e| (e.job.clone(), e.seq, e.kind, e.attempt)).collect()
    };
    let heard = |n: usize| {
        for _ in 0..500 {
            if seen.lock().unwrap().len() >= n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ids(&seen.lock().unwrap())
    };
    create(&*s, "j1", 1);
    assert_eq!(heard(1).len(), 1, "published once committed");
    let lease_j1 = start(&*s, "j1", 2).lease;
    wait(s.cycles("j1", &lease_j1, vec![cycle(1, &[]), cycle(2, &[])], 3)).unwrap();
    wait(s.finish("j1", &lease_j1, outcome(Status::Converged, 2, 4))).unwrap();
    let stored = s.events("j1", 0).unwrap();
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(heard(5), ids(&stored), "every committed event, once, in order");
    assert_eq!(s.events("j1", 3).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    // A failed write publishes nothing (a later write that does publish bounds the wait).
    assert!(wait(s.begin("j1", &lease_j1, BTreeMap::new(), 5)).is_err(), "the run ended: its lease is gone");
    create(&*s, "j2", 6);
    let after = heard(6);
    assert_eq!(after.len(), 6, "{after:?}");
    assert_eq!(after[5].0, "j2", "the next event heard is j2's: the failed write published nothing");
}

fn manifest(description: &str) -> Manifest {
    Manifest {
        name: "upper".into(),
        description: description.into(),
        tests: Vec::new(),
        requested: Vec::new(),
        limits: None,
    }
}

fn report(digest: &str, verdict: Verdict) -> Report {
    Report {
        verdict,
        reasons: if verdict == Verdict::Accepted { Vec::new() } else { vec!["has 0 tests".into()] },
        name: "upper".into(),
        description: "shouts".into(),
        digest: digest.into(),
        size: 3,
        imports: Vec::new(),
        attempts: Vec::new(),
        tests: Vec::new(),
        limits: ToolLimits::default(),
        requested: Vec::new(),
    }
}

fn tool(tenant: &str, digest: &str, verdict: Verdict, description: &str, now_ms: u64) -> NewTool {
    NewTool {
        digest: digest.into(),
        name: "upper".into(),
        tenant: tenant.into(),
        manifest: manifest(description),
        report: report(digest, verdict),
        component: (verdict != Verdict::Rejected).then(|| b"wasm".to_vec()),
        now_ms,
    }
}

fn review(decision: Decision, at_ms: u64) -> ReviewRecord {
    ReviewRecord { decision, reviewer: "ada".into(), comment: "read it".into(), tenant: T.into(), at_ms }
}

fn outcomes(s: &dyn Store, digest: &str) -> Vec<String> {
    s.tool_history(T, digest)
        .unwrap()
        .into_iter()
        .map(|e| match e.entry {
            ToolHistory::Submitted { outcome, .. } => format!("{outcome:?}"),
            ToolHistory::Reviewed { decision, status, .. } => format!("{decision:?}->{status}"),
        })
        .collect()
}

pub fn tool_submissions_and_reviews_follow_the_rules(open: Open) {
    let s = open("tool_submissions_and_reviews_follow_the_rules", None);
    let r = wait(s.put_tool(tool(T, "d1", Verdict::NeedsReview, "one", 1))).unwrap();
    assert_eq!((r.status, r.verdict, r.accepted_ms), (ToolStatus::NeedsReview, Verdict::NeedsReview, None));
    assert_eq!(r.report, report("d1", Verdict::NeedsReview), "the report as submitted");
    assert_eq!(wait(s.put_tool(tool(T, "d1", Verdict::NeedsReview, "one", 2))).unwrap().updated_ms, 1, "unchanged");
    let replaced = wait(s.put_tool(tool(T, "d1", Verdict::NeedsReview, "two", 3))).unwrap();
    assert_eq!((replaced.manifest.description.as_str(), replaced.updated_ms), ("two", 3));
    assert!(matches!(
        wait(s.review_tool(T, "d1", review(Decision::Revoke, 4))).unwrap(),
        ReviewOutcome::NotPending(ToolStatus::NeedsReview)
    ));
    let ReviewOutcome::Recorded(rejected) = wait(s.review_tool(T, "d1", review(Decision::Reject, 5))).unwrap() else {
        panic!("reject recorded")
    };
    assert_eq!(rejected.status, ToolStatus::Rejected);
    assert_eq!(rejected.reviews, [review(Decision::Reject, 5)]);
    assert_eq!(s.tool_component(T, "d1").unwrap(), None, "a rejected tool's bytes go");
    let kept = wait(s.put_tool(tool(T, "d1", Verdict::Accepted, "three", 6))).unwrap();
    assert_eq!(kept.status, ToolStatus::Rejected, "no resubmission undoes a rejection");
    assert_eq!(outcomes(&*s, "d1"), ["New", "Unchanged", "Replaced", "Reject->rejected", "KeptByReview"]);

    let accepted = wait(s.put_tool(tool(T, "d2", Verdict::Accepted, "one", 7))).unwrap();
    assert_eq!((accepted.status, accepted.accepted_ms), (ToolStatus::Accepted, Some(7)));
    assert!(matches!(
        wait(s.review_tool(T, "d2", review(Decision::Approve, 8))).unwrap(),
        ReviewOutcome::NotPending(ToolStatus::Accepted)
    ));
    let ReviewOutcome::Recorded(revoked) = wait(s.review_tool(T, "d2", review(Decision::Revoke, 9))).unwrap() else {
        panic!("revoke recorded")
    };
    assert_eq!((revoked.status, revoked.accepted_ms), (ToolStatus::Revoked, Some(7)));
    assert_eq!(s.tool_component(T, "d2").unwrap().as_deref(), Some(&b"wasm"[..]), "kept for replays");

    let pending = wait(s.put_tool(tool(T, "d3", Verdict::NeedsReview, "one", 10))).unwrap();
    assert_eq!(pending.status, ToolStatus::NeedsReview);
    let ReviewOutcome::Recorded(approved) = wait(s.review_tool(T, "d3", review(Decision::Approve, 11))).unwrap() else {
        panic!("approve recorded")
    };
    assert_eq!((approved.status, approved.accepted_ms), (ToolStatus::Accepted, Some(11)));
    let again = wait(s.put_tool(tool(T, "d3", Verdict::NeedsReview, "two", 12))).unwrap();
    assert_eq!(again.status, ToolStatus::NeedsReview, "an approval is of a report; a new manifest needs a new one");
    let history = s.tool_history(T, "d3").unwrap();
    assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let ToolHistory::Submitted { manifest_sha256, reasons, .. } = &history[0].entry else { panic!("a submission") };
    assert_eq!((manifest_sha256.len(), reasons.as_slice()), (64, &["has 0 tests".to_owned()][..]));
    assert_eq!(
        s.tools(Some(T)).unwrap().iter().map(|t| t.digest.as_str()).collect::<Vec<_>>(),
        ["d1", "d2", "d3"],
        "in the order first stored"
    );
}

pub fn tools_belong_to_their_tenant(open: Open) {
    let s = open("tools_belong_to_their_tenant", None);
    wait(s.put_tool(tool(T, "d1", Verdict::NeedsReview, "one", 1))).unwrap();
    let theirs = wait(s.put_tool(tool(OTHER, "d1", Verdict::Accepted, "one", 2))).unwrap();
    assert_eq!((theirs.tenant.as_str(), theirs.status), (OTHER, ToolStatus::Accepted), "two records of one digest");
    assert_eq!(s.tool(T, "d1").unwrap().unwrap().status, ToolStatus::NeedsReview, "untouched by the other");
    let mut approve = review(Decision::Approve, 3);
    approve.tenant = OTHER.into();
    assert_eq!(wait(s.review_tool(OTHER, "d9", approve.clone())).unwrap(), ReviewOutcome::UnknownTool);
    assert!(matches!(wait(s.review_tool(OTHER, "d1", approve)).unwrap(), ReviewOutcome::NotPending(_)));
    assert_eq!(s.tool(T, "d1").unwrap().unwrap().status, ToolStatus::NeedsReview);
    assert_eq!(s.tools(Some(T)).unwrap().len(), 1);
    assert_eq!(s.tools(Some(OTHER)).unwrap().len(), 1);
    assert_eq!(s.tools(None).unwrap().len(), 2);
    assert!(s.tool_history(OTHER, "d9").unwrap().is_empty());
    assert_eq!(SubmissionOutcome::New, {
        let ToolHistory::Submitted { outcome, .. } = s.tool_history(OTHER, "d1").unwrap()[0].entry.clone() else {
            panic!("a submission")
        };
        outcome
    });
}

/// Real Unix ms: cases about lease expiry run on the clock (a backend with a shared clock uses its own).
fn real_now() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Claim with a lease of `lease_ms` on the real clock.
fn short(s: &dyn Store, job: Option<&str>, lease_ms: u64) -> Option<Started> {
    let req = ClaimRequest { lease_ms, now_ms: real_now(), ..request(job, 0) };
    wait(s.claim(req)).unwrap()
}

/// Sleep past a lease: these cases are about time running out, so they wait for it.
fn outlive(lease_ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(lease_ms * 3));
}

pub fn claims_take_the_oldest_job_and_expired_leases_are_taken_over(open: Open) {
    let s = open("claims_take_the_oldest_job_and_expired_leases_are_taken_over", None);
    for (i, id) in ["j1", "j2", "j3"].iter().enumerate() {
        create(&*s, id, i as u64);
    }
    assert_eq!(s.queued().unwrap(), 3);
    let first = short(&*s, None, 60_000).unwrap();
    let second = short(&*s, None, 100).unwrap();
    assert_eq!((first.record.id.as_str(), second.record.id.as_str()), ("j1", "j2"), "oldest first");
    assert_eq!(s.queued().unwrap(), 1);
    let third = short(&*s, None, 60_000).unwrap();
    assert_eq!(third.record.id, "j3");
    assert!(short(&*s, None, 60_000).is_none(), "every job is held");
    outlive(100);
    let taken = short(&*s, None, 60_000).expect("j2's lease expired: it is claimable again");
    assert_eq!((taken.record.id.as_str(), taken.lease.attempt), ("j2", 2), "taken over, a later attempt");
    assert!(short(&*s, None, 60_000).is_none(), "j1 and j3 are still held");
    assert_eq!(s.job(None, "j2").unwrap().unwrap().status, Status::Running);
}

pub fn a_run_that_lost_its_lease_writes_nothing(open: Open) {
    let s = open("a_run_that_lost_its_lease_writes_nothing", None);
    create(&*s, "j1", 1);
    let stale = short(&*s, Some("j1"), 100).unwrap().lease;
    wait(s.cycles("j1", &stale, vec![cycle(1, &[])], 2)).unwrap();
    outlive(100);
    let fresh = short(&*s, Some("j1"), 60_000).unwrap().lease;
    let before = s.events("j1", 0).unwrap();
    let lost = |r: Result<(), crate::StoreError>| matches!(r, Err(crate::StoreError::LeaseLost(id)) if id == "j1");
    assert!(lost(wait(s.cycles("j1", &stale, vec![cycle(2, &["q"])], 3))));
    assert!(lost(wait(s.begin("j1", &stale, BTreeMap::new(), 3))));
    assert!(lost(wait(s.finish("j1", &stale, outcome(Status::Converged, 2, 4)))));
    assert!(lost(wait(s.release("j1", &stale, 4))));
    assert!(matches!(
        wait(s.park("j1", &stale, vec![], outcome(Status::Waiting, 2, 4))),
        Err(crate::StoreError::LeaseLost(_))
    ));
    assert!(!wait(s.renew("j1", &stale, 60_000, real_now())).unwrap().held);
    assert_eq!(s.events("j1", 0).unwrap(), before, "nothing of the stale run's writes");
    assert_eq!(s.job(None, "j1").unwrap().unwrap().status, Status::Running);
    // The fresh run writes, and the trail's attempts never go back.
    wait(s.cycles("j1", &fresh, vec![cycle(1, &[]), cycle(2, &[])], 5)).unwrap();
    wait(s.finish("j1", &fresh, outcome(Status::Converged, 2, 6))).unwrap();
    let attempts: Vec<u32> = s.events("j1", 0).unwrap().iter().filter(|e| e.attempt > 0).map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 1, 2, 2, 2], "started, cycle 1 of the first run; started, cycle 2, end of the second");
    assert_eq!(s.job(None, "j1").unwrap().unwrap().status, Status::Converged);
}

pub fn a_job_that_keeps_dying_ends_with_its_attempts_exhausted(open: Open) {
    let s = open("a_job_that_keeps_dying_ends_with_its_attempts_exhausted", None);
    create(&*s, "dies", 1);
    create(&*s, "stops", 2);
    // A run that stops (waits, ends, is released) is no crash.
    for _ in 0..4 {
        let l = short(&*s, Some("stops"), 60_000).unwrap().lease;
        wait(s.release("stops", &l, 3)).unwrap();
    }
    for attempt in 1..=3 {
        let l = short(&*s, Some("dies"), 50).expect("claimable again").lease;
        assert_eq!(l.attempt, attempt);
        outlive(50);
    }
    assert!(short(&*s, Some("dies"), 60_000).is_none(), "three runs died: not run again");
    let r = s.job(None, "dies").unwrap().unwrap();
    assert_eq!(r.status, Status::AgentFailed);
    let result: serde_json::Value = serde_json::from_str(r.result.as_deref().unwrap()).unwrap();
    assert_eq!(result["error"]["kind"], "attempts_exhausted", "{result}");
    assert_eq!(kinds(&*s, "dies").last(), Some(&EventKind::End));
    assert!(short(&*s, Some("stops"), 60_000).is_some(), "released runs count for nothing");
}

pub fn a_renewal_extends_the_lease_and_tells_of_a_cancel(open: Open) {
    let s = open("a_renewal_extends_the_lease_and_tells_of_a_cancel", None);
    create(&*s, "j1", 1);
    let l = short(&*s, Some("j1"), 300).unwrap().lease;
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let r = wait(s.renew("j1", &l, 300, real_now())).unwrap();
        assert_eq!(r, crate::Renewal { held: true, cancel_requested: false });
    }
    assert!(short(&*s, None, 60_000).is_none(), "renewed past its first expiry: still held");
    wait(s.cancel(T, "j1", 2)).unwrap();
    assert!(wait(s.renew("j1", &l, 300, real_now())).unwrap().cancel_requested);
}

pub fn free_text_is_kept_byte_for_byte(open: Open) {
    let s = open("free_text_is_kept_byte_for_byte", None);
    // What a client or a guest may send: NUL, control characters, quotes, non-ASCII.
    let odd = "a\u{0}b\tc\"d'e é 漢 \u{7f}";
    let mut new = job("j1", T, None, "{}", 1);
    new.goal = odd.into();
    new.labels = BTreeMap::from([(odd.to_owned(), odd.to_owned())]);
    assert_eq!(wait(s.create_job(new)).unwrap(), Admission::Created);
    let stored = s.job(None, "j1").unwrap().unwrap();
    assert_eq!((stored.goal.as_str(), stored.labels.get(odd).map(String::as_str)), (odd, Some(odd)));
    let label = Some((odd.to_owned(), odd.to_owned()));
    assert_eq!(s.list(Some(T), &ListFilter { limit: 5, label, ..ListFilter::default() }).unwrap().len(), 1);
    let lease = start(&*s, "j1", 2).lease;
    let mut asked = cycle(1, &["q"]);
    asked.questions[0].prompt = odd.into();
    wait(s.cycles("j1", &lease, vec![asked], 3)).unwrap();
    assert_eq!(wait(s.answer(T, "j1", "q", odd, 4)).unwrap(), AnswerOutcome::Recorded { resume: false });
    assert_eq!(s.answers("j1").unwrap().get("q").map(String::as_str), Some(odd));
    wait(s.put_tool(tool(T, "d1", Verdict::NeedsReview, odd, 5))).unwrap();
    let review = ReviewRecord {
        decision: Decision::Reject,
        reviewer: odd.into(),
        comment: odd.into(),
        tenant: T.into(),
        at_ms: 6,
    };
    assert!(matches!(wait(s.review_tool(T, "d1", review.clone())).unwrap(), ReviewOutcome::Recorded(_)));
    let kept = s.tool(T, "d1").unwrap().unwrap();
    assert_eq!((kept.manifest.description.as_str(), &kept.reviews[0]), (odd, &review));
}

pub fn the_trace_context_travels_with_the_job(open: Open) {
    let s = open("the_trace_context_travels_with_the_job", None);
    let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut new = job("j1", T, None, "{}", 1);
    new.traceparent = Some(traced.to_owned());
    assert_eq!(wait(s.create_job(new)).unwrap(), Admission::Created);
    create(&*s, "j2", 2);
    assert_eq!(s.job(Some(T), "j1").unwrap().unwrap().traceparent.as_deref(), Some(traced));
    assert_eq!(s.job(Some(T), "j2").unwrap().unwrap().traceparent, None);
    // Every run of the job sees it, also after it was given back and claimed again.
    let first = start(&*s, "j1", 3);
    assert_eq!(first.record.traceparent.as_deref(), Some(traced));
    wait(s.release("j1", &first.lease, 4)).unwrap();
    assert_eq!(start(&*s, "j1", 5).record.traceparent.as_deref(), Some(traced));
    // Never in the trail.
    assert!(s.events("j1", 0).unwrap().iter().all(|e| !e.data.contains("4bf92f35")));
}

/// A run of `job` that started at `started_ms` before the job was stored, with `cycles` and `stop`.
fn new_run(cycles: Vec<CycleRecord>, stop: Option<Outcome>, now_ms: u64) -> NewRun {
    NewRun {
        owner: "replica-a".into(),
        lease: Lease { token: crate::rules::new_token(), attempt: 1 },
        lease_ms: 60_000,
        started_ms: 2,
        components: BTreeMap::from([("agent-a".to_owned(), "d1".to_owned())]),
        cycles,
        stop,
        now_ms,
    }
}

/// What a job's record and trail say, without the times of the writes: status, cycles, attempts, components,
/// result, and each event's sequence number, kind, attempt and payload.
type Written = (Status, u32, u32, BTreeMap<String, String>, Option<String>, Vec<(u64, EventKind, u32, String)>);

fn written(s: &dyn Store, id: &str) -> Written {
    let r = s.job(None, id).unwrap().unwrap();
    let trail = s.events(id, 0).unwrap().into_iter().map(|e| (e.seq, e.kind, e.attempt, e.data)).collect();
    (r.status, r.cycles, r.attempts, r.components, r.result, trail)
}

pub fn a_run_stored_whole_reads_as_one_stored_step_by_step(open: Open) {
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let s = open(
        "a_run_stored_whole_reads_as_one_stored_step_by_step",
        Some(Arc::new(move |e| sink.lock().unwrap().push(e.clone()))),
    );
    // Step by step.
    create(&*s, "j1", 1);
    let lease = start(&*s, "j1", 2).lease;
    let components = BTreeMap::from([("agent-a".to_owned(), "d1".to_owned())]);
    wait(s.begin("j1", &lease, components, 2)).unwrap();
    wait(s.cycles("j1", &lease, vec![cycle(1, &[]), cycle(2, &[])], 3)).unwrap();
    wait(s.finish("j1", &lease, outcome(Status::Converged, 2, 4))).unwrap();
    // Whole.
    let run = new_run(vec![cycle(1, &[]), cycle(2, &[])], Some(outcome(Status::Converged, 2, 4)), 4);
    assert_eq!(wait(s.create_run(job("j2", T, None, "{}", 1), run.clone())).unwrap(), Admission::Created);
    let (step, whole) = (written(&*s, "j1"), written(&*s, "j2"));
    assert_eq!(whole, step, "the same record and trail");
    assert_eq!(whole.0, Status::Converged);
    assert_eq!(
        whole.5.iter().map(|e| e.1).collect::<Vec<_>>(),
        [EventKind::Created, EventKind::Started, EventKind::Cycle, EventKind::Cycle, EventKind::End]
    );
    let r = s.job(Some(T), "j2").unwrap().unwrap();
    assert_eq!((r.created_ms, r.context_hash.as_deref()), (1, Some("hash-converged-2")));
    assert!(s.unfinished().unwrap().iter().all(|id| id != "j2"), "ended: nothing to resume");
    // Every event published after the commit, the end last.
    for _ in 0..500 {
        if seen.lock().unwrap().iter().filter(|e| e.job == "j2").count() >= 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let heard: Vec<(u64, EventKind)> =
        seen.lock().unwrap().iter().filter(|e| e.job == "j2").map(|e| (e.seq, e.kind)).collect();
    assert_eq!(heard, whole.5.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>());
    // With a fresh key: the same again, and the key names the job.
    assert_eq!(wait(s.create_run(job("j5", T, Some("k5"), "{}", 1), run)).unwrap(), Admission::Created);
    assert_eq!(written(&*s, "j5"), step, "with a key, as step by step");
    assert_eq!(
        wait(s.create_job(job("j6", T, Some("k5"), "{}", 2))).unwrap(),
        Admission::Existing { id: "j5".into(), status: Status::Converged }
    );
    // A key that names another job: nothing of the run is stored.
    assert_eq!(wait(s.create_job(job("j3", T, Some("k"), "{}", 5))).unwrap(), Admission::Created);
    let again = wait(
        s.create_run(job("j4", T, Some("k"), "{}", 6), new_run(vec![], Some(outcome(Status::Converged, 0, 6)), 6)),
    );
    assert_eq!(again.unwrap(), Admission::Existing { id: "j3".into(), status: Status::Queued });
    assert!(s.job(None, "j4").unwrap().is_none());
}

pub fn a_run_stored_while_it_runs_holds_its_lease(open: Open) {
    let s = open("a_run_stored_while_it_runs_holds_its_lease", None);
    let run = new_run(vec![cycle(1, &[])], None, 3);
    assert_eq!(wait(s.create_run(job("j1", T, None, "{}", 1), run.clone())).unwrap(), Admission::Created);
    create(&*s, "j0", 1);
    let lease = start(&*s, "j0", 2).lease;
    wait(s.begin("j0", &lease, run.components.clone(), 2)).unwrap();
    wait(s.cycles("j0", &lease, vec![cycle(1, &[])], 3)).unwrap();
    assert_eq!(written(&*s, "j1"), written(&*s, "j0"), "as the same run stored step by step");
    let r = s.job(None, "j1").unwrap().unwrap();
    assert_eq!((r.status, r.cycles, r.attempts), (Status::Running, 1, 1));
    assert!(wait(s.claim(request(Some("j1"), 4))).unwrap().is_none(), "held under the run's lease");
    let renewal = wait(s.renew("j1", &run.lease, 60_000, 4)).unwrap();
    assert!(renewal.held && !renewal.cancel_requested);
    let stranger = Lease { token: crate::rules::new_token(), attempt: 1 };
    assert!(matches!(wait(s.cycles("j1", &stranger, vec![cycle(2, &[])], 5)), Err(crate::StoreError::LeaseLost(_))));
    // The run goes on under its lease.
    wait(s.cycles("j1", &run.lease, vec![cycle(1, &[]), cycle(2, &[])], 5)).unwrap();
    wait(s.finish("j1", &run.lease, outcome(Status::Converged, 2, 6))).unwrap();
    assert_eq!(
        kinds(&*s, "j1"),
        [EventKind::Created, EventKind::Started, EventKind::Cycle, EventKind::Cycle, EventKind::End]
    );
    // A run stored a long time after it started holds its lease from the write, not from its start.
    let late = NewRun { started_ms: 1, now_ms: real_now(), ..new_run(vec![], None, 0) };
    wait(s.create_run(job("j3", T, None, "{}", 1), late)).unwrap();
    assert!(wait(s.claim(request(Some("j3"), real_now() + 1_000))).unwrap().is_none(), "held from the write");
    // A run stored while it ran and given back: the job is claimable again, as its second attempt.
    let run = new_run(vec![], None, 7);
    wait(s.create_run(job("j2", T, None, "{}", 7), run.clone())).unwrap();
    wait(s.release("j2", &run.lease, 8)).unwrap();
    assert_eq!(start(&*s, "j2", 9).lease.attempt, 2);
}

pub fn a_run_stored_waiting_takes_answers(open: Open) {
    let s = open("a_run_stored_waiting_takes_answers", None);
    let run = new_run(vec![cycle(1, &["q1"]), cycle(2, &[])], Some(outcome(Status::Waiting, 2, 3)), 3);
    wait(s.create_run(job("j1", T, None, "{}", 1), run.clone())).unwrap();
    create(&*s, "j0", 1);
    let lease = start(&*s, "j0", 2).lease;
    wait(s.begin("j0", &lease, run.components.clone(), 2)).unwrap();
    wait(s.cycles("j0", &lease, run.cycles.clone(), 3)).unwrap();
    assert_eq!(wait(s.park("j0", &lease, vec![], outcome(Status::Waiting, 2, 3))).unwrap(), Park::Parked);
    assert_eq!(written(&*s, "j1"), written(&*s, "j0"), "as the same run stored step by step");
    let r = s.job(None, "j1").unwrap().unwrap();
    assert_eq!((r.status, r.context_hash.as_deref()), (Status::Waiting, Some("hash-waiting-2")));
    assert_eq!(kinds(&*s, "j1").last(), Some(&EventKind::Waiting));
    assert_eq!(wait(s.answer(T, "j1", "q1", "yes", 4)).unwrap(), AnswerOutcome::Recorded { resume: true });
    let started = start(&*s, "j1", 5);
    assert_eq!((started.lease.attempt, started.answers.get("q1").map(String::as_str)), (2, Some("yes")));
}
