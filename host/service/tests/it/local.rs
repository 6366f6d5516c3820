//! The service over its own SQLite store: admission, answers, cancels, restarts, tool validation and review.

use crate::fake::Fake;
use converge_engine::{JobSpec, RayonExecutor, Status};
use converge_service::{AdaptiveExecutor, Runtime, Service, ServiceConfig, ServiceError, Submitted, Watchers};
use converge_store::{Decision, EventKind, Manifest, SqliteStore, Store, ToolStatus};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    svc: Arc<Service>,
    store: Arc<SqliteStore>,
    runtime: Arc<Fake>,
}

fn dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A service over the store in `dir`; `workers` 0 leaves every job queued.
fn service(dir: &std::path::Path, workers: usize, config: &ServiceConfig) -> Setup {
    let watchers = Arc::new(Watchers::default());
    let hook = Arc::clone(&watchers);
    let store = Arc::new(SqliteStore::open(dir, Some(Arc::new(move |e| hook.publish(e)))).unwrap());
    let runtime = Arc::new(Fake::new());
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    let executor = AdaptiveExecutor::new(RayonExecutor::new(pool), 2);
    let config = ServiceConfig { workers, ..config.clone() };
    let svc = Service::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::clone(&runtime) as Arc<dyn Runtime>,
        executor,
        watchers,
        config,
    )
    .unwrap();
    svc.start().unwrap();
    Setup { svc, store, runtime }
}

fn spec(json: &str) -> JobSpec {
    JobSpec::from_json(json).unwrap()
}

const COPY: &str = r#"{"goal": "copy", "agents": ["copier"], "facts": [{"key": "in", "id": "1", "content": "hi"}]}"#;
const ASK: &str = r#"{"goal": "ask", "agents": ["asker"]}"#;
const WAIT: Option<Duration> = Some(Duration::from_secs(30));

async fn until(svc: &Service, id: &str, status: Status) -> converge_engine::JobResult {
    for _ in 0..600 {
        let r = svc.result("t", id).await.unwrap();
        if r.status == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never reached {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_is_committed_and_a_wait_returns_its_result() {
    let s = service(&dir("submit"), 2, &ServiceConfig::default());
    let submitted = s.svc.submit("t", spec(COPY), None, WAIT).await.unwrap();
    let Submitted::Ended { json, .. } = &submitted else { panic!("ended within the wait") };
    let result = submitted.result().unwrap();
    assert_eq!(result.status, Status::Converged);
    assert!(result.facts.iter().any(|f| f.key == "out" && f.content == "hi"));
    let stored = s.store.job(Some("t"), &result.id).unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.context_hash.as_deref()),
        (Status::Converged, Some(result.context_hash.as_str()))
    );
    assert_eq!(stored.components.keys().collect::<Vec<_>>(), ["copier"], "the components it ran, recorded");
    assert_eq!(stored.result.as_deref(), Some(&**json), "the wait answers with the stored bytes");
    let Submitted::Accepted { status, .. } = s.svc.submit("t", spec(COPY), None, None).await.unwrap() else {
        panic!("no wait: accepted, whatever the job has done since")
    };
    assert!(matches!(status, Status::Queued | Status::Running | Status::Converged), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_agents_bad_keys_and_reused_keys_are_refused_naming_the_problem() {
    let s = service(&dir("refusals"), 0, &ServiceConfig::default());
    match s.svc.submit("t", spec(r#"{"goal": "x", "agents": ["nope"]}"#), None, None).await {
        Err(ServiceError::InvalidSpec(m)) => assert!(m.contains("unknown agent \"nope\""), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.svc.submit("t", spec(COPY), Some(String::new()), None).await,
        Err(ServiceError::Invalid(m)) if m.contains("Idempotency-Key")
    ));
    let first = s.svc.submit("t", spec(COPY), Some("k".into()), None).await.unwrap();
    let again = s.svc.submit("t", spec(COPY), Some("k".into()), None).await.unwrap();
    assert_eq!(first.id(), again.id(), "one job per key");
    match s.svc.submit("t", spec(ASK), Some("k".into()), None).await {
        Err(ServiceError::IdempotencyConflict { job }) => assert_eq!(job, first.id()),
        other => panic!("{other:?}"),
    }
    let all = s.store.list(Some("t"), &converge_store::ListFilter { limit: 10, ..Default::default() }).unwrap();
    assert_eq!(all.len(), 1, "nothing else written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_before_anything_is_written() {
    let s = service(&dir("full"), 0, &ServiceConfig { queue: 2, retry_after: 3, ..ServiceConfig::default() });
    for _ in 0..2 {
        s.svc.submit("t", spec(COPY), None, None).await.unwrap();
    }
    match s.svc.submit("t", spec(COPY), None, None).await {
        Err(ServiceError::Overloaded { retry_after, message }) => {
            assert_eq!(retry_after, 3);
            assert!(message.contains("queue is full"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.store.counts().unwrap().get(&Status::Queued), Some(&2));
    assert_eq!(s.svc.queue_depth().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_resumes_a_waiting_job_and_wrong_answers_are_named() {
    let s = service(&dir("answers"), 2, &ServiceConfig::default());
    let submitted = s.svc.submit("t", spec(ASK), None, WAIT).await.unwrap();
    let id = submitted.id().to_owned();
    let waiting = until(&s.svc, &id, Status::Waiting).await;
    assert_eq!(waiting.open_questions[0].id, "choice");
    assert!(matches!(s.svc.answer("t", &id, "other", "x".into()).await, Err(ServiceError::UnknownQuestion { .. })));
    assert!(matches!(s.svc.answer("u", &id, "choice", "x".into()).await, Err(ServiceError::NotFound(_))));
    assert!(s.svc.answer("t", &id, "choice", "left".into()).await.unwrap(), "every answer given: resumed");
    // Refused either way: answered already, or (native agents are quick) the resumed job has ended.
    assert!(matches!(
        s.svc.answer("t", &id, "choice", "right".into()).await,
        Err(ServiceError::AlreadyAnswered { .. } | ServiceError::Finished { .. })
    ));
    let done = until(&s.svc, &id, Status::Converged).await;
    assert!(done.facts.iter().any(|f| f.key == "decision" && f.content == "left"));
    assert!(matches!(
        s.svc.answer("t", &id, "choice", "late".into()).await,
        Err(ServiceError::Finished { status: Status::Converged, .. })
    ));
    assert!(matches!(s.svc.cancel("t", &id).await, Err(ServiceError::Finished { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_seen_while_the_job_still_runs_can_be_answered_at_once() {
    // The asker asks in cycle 1 while the counter keeps the job running for about a second: the question shows
    // in the live result long before the job waits, and an answer given then must find it in the store.
    let s = service(&dir("early-answer"), 2, &ServiceConfig::default());
    let both = r#"{"goal": "ask while counting", "agents": ["asker", "counter"],
                   "facts": [{"key": "count", "id": "000", "content": "start"}]}"#;
    let id = s.svc.submit("t", spec(both), None, None).await.unwrap().id().to_owned();
    let mut seen = None;
    for _ in 0..400 {
        let r = s.svc.result("t", &id).await.unwrap();
        if r.status == Status::Running && !r.open_questions.is_empty() {
            seen = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = seen.expect("the open question shows while the job runs");
    assert_eq!(seen.open_questions[0].id, "choice");
    assert!(seen.cycles < 16, "seen before the held cycles would have been written anyway: {}", seen.cycles);
    s.svc.answer("t", &id, "choice", "left".into()).await.unwrap();
    let done = until(&s.svc, &id, Status::Converged).await;
    assert!(done.facts.iter().any(|f| f.key == "decision" && f.content == "left"), "{:?}", done.facts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiting_job_ends_cancelled_with_its_facts() {
    let s = service(&dir("cancel"), 2, &ServiceConfig::default());
    let id = s.svc.submit("t", spec(ASK), None, WAIT).await.unwrap().id().to_owned();
    until(&s.svc, &id, Status::Waiting).await;
    assert_eq!(s.svc.cancel("t", &id).await.unwrap(), Status::Waiting);
    let r = until(&s.svc, &id, Status::Cancelled).await;
    assert_eq!(r.error.unwrap().kind, "cancelled");
    assert!(matches!(s.svc.cancel("t", "job_nope").await, Err(ServiceError::NotFound(_))));
    assert!(matches!(s.svc.cancel("t", "../etc").await, Err(ServiceError::NotFound(_))), "an id of no job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_admitted_jobs_to_the_hash_of_an_uninterrupted_run() {
    let d = dir("restart");
    let uninterrupted = {
        let s = service(&dir("restart-reference"), 2, &ServiceConfig::default());
        let r = s.svc.submit("t", spec(COPY), None, WAIT).await.unwrap().result().expect("ended");
        r.context_hash
    };
    let id = {
        let s = service(&d, 0, &ServiceConfig::default());
        let id = s.svc.submit("t", spec(COPY), None, None).await.unwrap().id().to_owned();
        s.svc.shutdown();
        s.store.close();
        id
    };
    let s = service(&d, 2, &ServiceConfig::default());
    let r = until(&s.svc, &id, Status::Converged).await;
    assert_eq!(r.context_hash, uninterrupted);
    let kinds: Vec<EventKind> = s.store.events(&id, 0).unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&EventKind::Created));
    assert_eq!(kinds.last(), Some(&EventKind::End));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_job_gives_every_event_once_and_ends_with_end() {
    let s = service(&dir("follow"), 2, &ServiceConfig::default());
    let id = s.svc.submit("t", spec(ASK), None, WAIT).await.unwrap().id().to_owned();
    until(&s.svc, &id, Status::Waiting).await;
    let mut events = s.svc.follow("t", &id, 0).await.unwrap();
    s.svc.answer("t", &id, "choice", "left".into()).await.unwrap();
    let mut seqs = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), events.recv()).await.unwrap() {
        seqs.push(e.seq);
        if e.kind == EventKind::End {
            break;
        }
    }
    let stored: Vec<u64> = s.store.events(&id, 0).unwrap().into_iter().map(|e| e.seq).collect();
    assert_eq!(seqs, stored, "the whole trail, live, no gap and no repeat");
    let mut resumed = s.svc.follow("t", &id, 3).await.unwrap();
    assert_eq!(resumed.recv().await.map(|e| e.seq), Some(4), "resumes after the sequence number given");
    assert!(matches!(s.svc.follow("u", &id, 0).await, Err(ServiceError::NotFound(_))), "another tenant's job");
}

fn manifest(name: &str, description: &str) -> Manifest {
    Manifest {
        name: name.into(),
        description: description.into(),
        tests: Vec::new(),
        requested: Vec::new(),
        limits: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validated_tools_follow_their_reviews_and_the_line_is_bounded() {
    let s = service(&dir("tools"), 1, &ServiceConfig { validations_waiting: 0, ..ServiceConfig::default() });
    let ticket = s.svc.validation_ticket().unwrap();
    assert!(matches!(s.svc.validation_ticket(), Err(ServiceError::Overloaded { retry_after: 5, .. })), "one place");
    let shaky = s.svc.validate(ticket, "t", vec![1; 3], manifest("shaky", "shaky")).await.unwrap();
    assert_eq!((shaky.record.status, shaky.callable), (ToolStatus::NeedsReview, false));
    let digest = shaky.record.digest.clone();
    assert!(matches!(
        s.svc.review("t", &digest, Decision::Approve, " ".into(), String::new()).await,
        Err(ServiceError::Invalid(m)) if m.starts_with("reviewer")
    ));
    assert!(
        matches!(
            s.svc.review("u", &digest, Decision::Approve, "ada".into(), String::new()).await,
            Err(ServiceError::NotFound(_))
        ),
        "another tenant cannot approve it"
    );
    let (approved, callable) = s.svc.review("t", &digest, Decision::Approve, "ada".into(), "ok".into()).await.unwrap();
    assert_eq!((approved.status, callable), (ToolStatus::Accepted, true));
    assert!(s.runtime.callable("t", &approved.pinned()) && !s.runtime.callable("u", &approved.pinned()));
    let (revoked, callable) = s.svc.review("t", &digest, Decision::Revoke, "ada".into(), "no".into()).await.unwrap();
    assert_eq!((revoked.status, callable), (ToolStatus::Revoked, false));
    assert!(matches!(
        s.svc.review("t", &digest, Decision::Revoke, "ada".into(), String::new()).await,
        Err(ServiceError::NotPending { status: ToolStatus::Revoked, revoke: true, .. })
    ));
    let good = s.svc.validate(s.svc.validation_ticket().unwrap(), "t", vec![2; 5], manifest("good", "good")).await;
    let good = good.unwrap();
    assert_eq!((good.record.status, good.callable), (ToolStatus::Accepted, true));
    let listing = s.svc.tools("t").await.unwrap();
    assert_eq!(
        listing.submitted.iter().map(|(r, c)| (r.name.as_str(), *c)).collect::<Vec<_>>(),
        [("shaky", false), ("good", true)]
    );
    assert!(s.svc.tools("u").await.unwrap().submitted.is_empty());
    assert!(matches!(s.svc.tool("t", "not-a-digest").await, Err(ServiceError::NotFound(_))));
    // At a restart the accepted ones are callable again, the revoked one is not.
    s.svc.shutdown();
    s.store.close();
    let again = service(&dir_keep("tools"), 1, &ServiceConfig::default());
    assert!(again.runtime.callable("t", &good.record.pinned()));
    assert!(!again.runtime.callable("t", &revoked.pinned()));
}

/// The directory of an earlier `dir(test)`, kept.
fn dir_keep(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service").join(test)
}

/// The job the counter keeps running for about a second (40 cycles), with nobody asking anything.
const COUNT: &str = r#"{"goal": "count", "agents": ["counter"], "budget": {"max_cycles": 50},
                        "facts": [{"key": "count", "id": "000", "content": "start"}]}"#;

/// The jobs of tenant `t` in the store, newest first.
fn stored(s: &Setup) -> Vec<converge_store::JobSummary> {
    s.store.list(Some("t"), &converge_store::ListFilter { limit: 50, ..Default::default() }).unwrap()
}

/// Each event of a job's trail: its kind and attempt; and whether the sequence numbers run 1, 2, 3, ...
fn trail(s: &Setup, id: &str) -> (Vec<(EventKind, u32)>, bool) {
    let events = s.store.events(id, 0).unwrap();
    let contiguous = events.iter().zip(1..).all(|(e, n)| e.seq == n);
    (events.into_iter().map(|e| (e.kind, e.attempt)).collect(), contiguous)
}

/// A trail of one run: created, started (attempt 1), `cycles` cycles, then `stop`.
fn one_run(cycles: u32, stop: EventKind) -> Vec<(EventKind, u32)> {
    let mut t = vec![(EventKind::Created, 0), (EventKind::Started, 1)];
    t.extend((0..cycles).map(|_| (EventKind::Cycle, 1)));
    t.push((stop, 1));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_job_is_stored_at_its_stop_as_a_job_written_step_by_step() {
    let s = service(&dir("whole"), 2, &ServiceConfig::default());
    let waited = s.svc.submit("t", spec(COPY), None, WAIT).await.unwrap().result().expect("ended within the wait");
    let polled = s.svc.submit("t", spec(COPY), None, None).await.unwrap().id().to_owned();
    let polled = until(&s.svc, &polled, Status::Converged).await;
    assert_eq!(waited.context_hash, polled.context_hash);
    let (whole, contiguous) = trail(&s, &waited.id);
    assert!(contiguous);
    assert_eq!(whole, one_run(waited.cycles, EventKind::End));
    assert_eq!(whole, trail(&s, &polled.id).0, "the same trail as the job stored at admission");
    let record = s.store.job(Some("t"), &waited.id).unwrap().unwrap();
    assert_eq!((record.attempts, record.cycles), (1, waited.cycles));
    // A waited job that stops to ask is stored waiting, and answers resume it.
    let asked = s.svc.submit("t", spec(ASK), None, WAIT).await.unwrap();
    let Submitted::Accepted { id, status: Status::Waiting } = asked else { panic!("{asked:?}") };
    assert_eq!(trail(&s, &id).0.last(), Some(&(EventKind::Waiting, 1)));
    s.svc.answer("t", &id, "choice", "left".into()).await.unwrap();
    until(&s.svc, &id, Status::Converged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_answers_after_the_job_is_stored_and_the_run_goes_on() {
    let s = service(&dir("wait-runs-out"), 2, &ServiceConfig::default());
    let submitted = s.svc.submit("t", spec(COUNT), None, Some(Duration::from_millis(100))).await.unwrap();
    let Submitted::Accepted { id, status: Status::Running } = submitted else { panic!("{submitted:?}") };
    let record = s.store.job(Some("t"), &id).unwrap().expect("stored before the 202");
    assert_eq!((record.status, record.attempts), (Status::Running, 1));
    let done = until(&s.svc, &id, Status::Converged).await;
    let (kinds, contiguous) = trail(&s, &id);
    assert!(contiguous);
    assert_eq!(kinds, one_run(done.cycles, EventKind::End), "one run, every cycle once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_is_stored_while_it_runs() {
    let s = service(&dir("long-run"), 2, &ServiceConfig::default());
    let svc = Arc::clone(&s.svc);
    let waiting = tokio::spawn(async move { svc.submit("t", spec(COUNT), None, WAIT).await });
    // Past 16 cycles held, the job is stored (running) while its client still waits.
    let mut seen = None;
    for _ in 0..400 {
        if let Some(j) = stored(&s).into_iter().find(|j| j.status == Status::Running) {
            seen = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = seen.expect("stored while it runs");
    assert!(!waiting.is_finished(), "its client still waits");
    let done = waiting.await.unwrap().unwrap().result().expect("ended within the wait");
    assert_eq!((done.id.as_str(), done.status, done.cycles), (seen.id.as_str(), Status::Converged, 40));
    let (kinds, contiguous) = trail(&s, &done.id);
    assert!(contiguous);
    assert_eq!(kinds, one_run(40, EventKind::End));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_client_went_away_is_stored_when_it_stops() {
    let s = service(&dir("client-gone"), 2, &ServiceConfig::default());
    let svc = Arc::clone(&s.svc);
    let waiting = tokio::spawn(async move { svc.submit("t", spec(COUNT), None, WAIT).await });
    // Gone while the job runs (before its 16th cycle, while nothing of it is stored).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(stored(&s).is_empty(), "nothing stored yet");
    waiting.abort();
    let mut done = None;
    for _ in 0..600 {
        if let Some(j) = stored(&s).into_iter().find(|j| j.status == Status::Converged) {
            done = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = done.expect("the run was stored when it stopped");
    let (kinds, contiguous) = trail(&s, &done.id);
    assert!(contiguous);
    assert_eq!(kinds, one_run(40, EventKind::End));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stores_the_waited_jobs_no_worker_took() {
    let d = dir("shutdown-queued");
    let id = {
        let s = service(&d, 1, &ServiceConfig::default());
        // The one worker is busy with the counter; the copy waits in the queue, not stored.
        let svc = Arc::clone(&s.svc);
        let busy = tokio::spawn(async move { svc.submit("t", spec(COUNT), None, WAIT).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let svc = Arc::clone(&s.svc);
        let queued = tokio::spawn(async move { svc.submit("t", spec(COPY), None, WAIT).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(stored(&s).is_empty());
        s.svc.shutdown();
        let mut id = None;
        for _ in 0..400 {
            if let Some(j) = stored(&s).into_iter().find(|j| j.status == Status::Queued) {
                id = Some(j.id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        busy.abort();
        queued.abort();
        s.store.close();
        id.expect("stored, queued, at shutdown")
    };
    let s = service(&d, 2, &ServiceConfig::default());
    let r = until(&s.svc, &id, Status::Converged).await;
    assert!(r.facts.iter().any(|f| f.key == "out" && f.content == "hi"));
}
