//! Several replicas (services in one process here; the chaos test runs real processes) over one PostgreSQL:
//! the shared queue, answers and cancels through any replica, live events from any replica, tools reaching all.

use crate::fake::Fake;
use converge_engine::{JobSpec, RayonExecutor, Status};
use converge_service::{AdaptiveExecutor, Runtime, Service, ServiceConfig, Submitted, Watchers};
use converge_store::{EventKind, Manifest, PostgresStore, Store, ToolStatus};
use converge_testpg::PgServer;
use std::sync::Arc;
use std::time::Duration;

struct Replica {
    svc: Arc<Service>,
    store: Arc<PostgresStore>,
    runtime: Arc<Fake>,
}

/// A replica named `owner` on `url` with `workers` workers (0: it only answers requests). Built off the async
/// runtime: the PostgreSQL client is synchronous.
async fn replica(url: &str, owner: &str, workers: usize) -> Replica {
    let (url, owner) = (url.to_owned(), owner.to_owned());
    tokio::task::spawn_blocking(move || build(&url, &owner, workers)).await.unwrap()
}

fn build(url: &str, owner: &str, workers: usize) -> Replica {
    let store = Arc::new(PostgresStore::connect(url).unwrap());
    let runtime = Arc::new(Fake::new());
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    let config = ServiceConfig {
        workers,
        owner: owner.into(),
        lease: Duration::from_secs(2),
        poll: Duration::from_millis(200),
        ..ServiceConfig::default()
    };
    let svc = Service::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::clone(&runtime) as Arc<dyn Runtime>,
        AdaptiveExecutor::new(RayonExecutor::new(pool), 2),
        Arc::new(Watchers::default()),
        config,
    )
    .unwrap();
    svc.start().unwrap();
    Replica { svc, store, runtime }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.svc.shutdown();
        let store = Arc::clone(&self.store);
        let _ = std::thread::spawn(move || store.close()).join();
    }
}

fn spec(json: &str) -> JobSpec {
    JobSpec::from_json(json).unwrap()
}

const COPY: &str = r#"{"goal": "copy", "agents": ["copier"], "facts": [{"key": "in", "id": "1", "content": "hi"}]}"#;
const ASK: &str = r#"{"goal": "ask", "agents": ["asker"]}"#;
const COUNT: &str =
    r#"{"goal": "count", "agents": ["counter"], "facts": [{"key": "count", "id": "000", "content": "start"}]}"#;

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

async fn owners(store: &Arc<PostgresStore>, id: &str) -> Vec<String> {
    let (store, id) = (Arc::clone(store), id.to_owned());
    tokio::task::spawn_blocking(move || store.events(&id, 0).unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Started)
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["owner"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_admitted_by_one_replica_run_on_another() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("shared-queue");
    let (api, runner) = (replica(&url, "api", 0).await, replica(&url, "runner", 2).await);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(api.svc.submit("t", spec(COPY), None, None).await.unwrap().id().to_owned());
    }
    for id in &ids {
        let r = until(&runner.svc, id, Status::Converged).await;
        assert!(r.facts.iter().any(|f| f.key == "out"));
        assert_eq!(owners(&api.store, id).await, ["runner"], "claimed once, by the replica with workers");
        let (store, job) = (Arc::clone(&api.store), id.clone());
        let trail = tokio::task::spawn_blocking(move || store.events(&job, 0).unwrap()).await.unwrap();
        let ends = trail.into_iter().filter(|e| e.kind == EventKind::End).count();
        assert_eq!(ends, 1);
    }
    assert_eq!(api.svc.queue_depth().await, 0, "the depth counted in the shared store");
    // A wait on the admitting replica returns the end the other committed.
    let submitted = api.svc.submit("t", spec(COPY), None, Some(Duration::from_secs(30))).await.unwrap();
    assert!(matches!(submitted, Submitted::Ended { .. }), "ended within the wait");
    assert_eq!(submitted.result().unwrap().status, Status::Converged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_live_events_go_through_any_replica() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("answers");
    let (api, runner) = (replica(&url, "api", 0).await, replica(&url, "runner", 2).await);
    let id = api.svc.submit("t", spec(ASK), None, None).await.unwrap().id().to_owned();
    until(&api.svc, &id, Status::Waiting).await;
    // Followed on the replica that does not run it, from the start.
    let mut events = api.svc.follow("t", &id, 0).await.unwrap();
    assert!(api.svc.answer("t", &id, "choice", "left".into()).await.unwrap(), "resumed");
    let mut seqs = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), events.recv()).await.unwrap() {
        seqs.push(e.seq);
        if e.kind == EventKind::End {
            break;
        }
    }
    let (store, job) = (Arc::clone(&runner.store), id.clone());
    let trail = tokio::task::spawn_blocking(move || store.events(&job, 0).unwrap()).await.unwrap();
    let stored: Vec<u64> = trail.into_iter().map(|e| e.seq).collect();
    assert_eq!(seqs, stored, "every event, once, though another replica wrote them");
    let done = until(&runner.svc, &id, Status::Converged).await;
    assert!(done.facts.iter().any(|f| f.key == "decision" && f.content == "left"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_replica_stops_a_job_running_on_another() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("cancel");
    let (api, runner) = (replica(&url, "api", 0).await, replica(&url, "runner", 1).await);
    let id = api.svc.submit("t", spec(COUNT), None, None).await.unwrap().id().to_owned();
    let running = until(&api.svc, &id, Status::Running).await;
    assert_eq!(running.status, Status::Running);
    assert_eq!(api.svc.cancel("t", &id).await.unwrap(), Status::Running);
    let r = until(&runner.svc, &id, Status::Cancelled).await;
    assert!(r.cycles < 40, "stopped before its end: {} cycles", r.cycles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_replica_gives_its_jobs_to_another_at_once() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("drain");
    let first = replica(&url, "first", 1).await;
    let id = first.svc.submit("t", spec(COUNT), None, None).await.unwrap().id().to_owned();
    until(&first.svc, &id, Status::Running).await;
    let second = replica(&url, "second", 1).await;
    let drainer = Arc::clone(&first.svc);
    let given_back = tokio::task::spawn_blocking(move || drainer.drain(Duration::ZERO)).await.unwrap();
    assert_eq!(given_back, 1);
    assert!(!first.svc.ready().await.ready, "a draining replica is not ready");
    let r = until(&second.svc, &id, Status::Converged).await;
    // Run again from its spec by the other: the same end as an uninterrupted run (40 counts, the 40th cycle quiet).
    assert_eq!((r.cycles, r.facts.iter().filter(|f| f.key == "count").count()), (40, 40));
    assert_eq!(owners(&second.store, &id).await, ["first", "second"], "taken at once by the other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_accepted_through_one_replica_is_callable_from_all() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("tools");
    let (a, b) = (replica(&url, "a", 1).await, replica(&url, "b", 1).await);
    let manifest = Manifest {
        name: "good".into(),
        description: "good".into(),
        tests: Vec::new(),
        requested: Vec::new(),
        limits: None,
    };
    let v = a.svc.validate(a.svc.validation_ticket().unwrap(), "t", vec![7; 9], manifest).await.unwrap();
    assert_eq!(v.record.status, ToolStatus::Accepted);
    let pinned = v.record.pinned();
    for _ in 0..200 {
        if b.runtime.callable("t", &pinned) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(b.runtime.callable("t", &pinned), "the other replica heard of it");
    let (revoked, _) = a
        .svc
        .review("t", &v.record.digest, converge_store::Decision::Revoke, "ada".into(), String::new())
        .await
        .unwrap();
    assert_eq!(revoked.status, ToolStatus::Revoked);
    for _ in 0..200 {
        if !b.runtime.callable("t", &pinned) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!b.runtime.callable("t", &pinned), "and of its revocation");
}
