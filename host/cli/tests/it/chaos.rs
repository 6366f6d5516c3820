//! Two `converge serve` replicas on one PostgreSQL with a short lease, and everything that goes wrong with
//! processes: `kill -9` of a replica running jobs, `SIGSTOP` of the other past its lease (its jobs are taken over,
//! then it wakes up still holding stale runs), and `SIGTERM` (a drain). Then every acknowledged job must have
//! ended exactly once with the `context_hash` of a single-process run, taken-over jobs show a later attempt, one
//! job exists per idempotency key, and no replica wrote anything after it lost a lease.

use crate::common::{MARKET_HASH, REVIEW_ANSWER, REVIEW_HASH, REVIEW_QUESTION, example};
use crate::serve::{PATIENCE, Server, request};
use converge_store::{EventKind, PostgresStore, Store};
use converge_testpg::PgServer;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The lease of both replicas: short, so a paused replica loses its jobs within seconds.
const LEASE_MS: u64 = 1500;

/// Time for a commit a replica sent just before it was killed or stopped to land, before the test reads which
/// jobs the replica still had running (a job it finished at that moment is not one it left behind).
const SETTLE: Duration = Duration::from_millis(300);

const COUNTER: &str =
    r#"{"goal": "count slowly", "agents": ["counter"], "facts": [{"key": "limit", "id": "n", "content": "30"}]}"#;

fn replica(dir: &Path, url: &str, owner: &str) -> Server {
    let lease = LEASE_MS.to_string();
    Server::start(
        dir,
        &[
            "--store",
            url,
            "--owner",
            owner,
            "--lease-ms",
            &lease,
            "--workers",
            "2",
            "--threads",
            "1",
            "--drain-ms",
            "2000",
            "--max-attempts",
            "6",
        ],
    )
}

/// Wait for `what` to hold, or fail naming it and showing `state`.
fn until(what: &str, state: impl Fn() -> String, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE * 2;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}\n{}", state());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Status, attempts and claim owners of every job, for a failure message.
fn state(store: &PostgresStore, ids: &[String]) -> String {
    let mut out = String::new();
    for id in ids {
        let job = store.job(None, id).unwrap();
        let (status, attempts) = job.map(|j| (j.status, j.attempts)).unzip();
        let _ = writeln!(out, "{id}: {status:?} attempts {attempts:?} claims {:?}", claims(store, id));
    }
    out
}

/// The owners of a job's claims, in order, from its trail.
fn claims(store: &PostgresStore, id: &str) -> Vec<String> {
    store
        .events(id, 0)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Started)
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["owner"].as_str().unwrap().to_owned())
        .collect()
}

/// Jobs running now whose last claim is `owner`'s.
fn running_on(store: &PostgresStore, ids: &[String], owner: &str) -> Vec<String> {
    ids.iter()
        .filter(|id| {
            store.job(None, id).unwrap().is_some_and(|j| j.status == converge_engine::Status::Running)
                && claims(store, id).last().is_some_and(|o| o == owner)
        })
        .cloned()
        .collect()
}

fn submit(server: &Server, body: &str, key: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = key.map(|k| vec![("Idempotency-Key", k)]).unwrap_or_default();
    let r = request(&server.addr, "POST", "/v1/jobs", &headers, Some(body)).unwrap();
    assert!(r.status == 202 || r.status == 200, "{} {}", r.status, r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

#[test]
fn replicas_survive_kill_pause_and_drain_and_every_job_ends_once_with_its_hash() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.database("chaos");
    let dir = crate::common::test_dir("chaos", "replicas");
    let counter = converge_tests::GUESTS.iter().find(|(n, _)| *n == "counter").unwrap().1;
    std::fs::copy(counter, dir.join("agents").join("counter.wasm")).unwrap();

    // The hash of the slow job in one process, as the reference.
    let spec = dir.join("counter.json");
    std::fs::write(&spec, COUNTER).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .arg("run")
        .arg(&spec)
        .args([
            "--agents",
            dir.join("agents").to_str().unwrap(),
            "--cache",
            crate::common::cache_dir().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let counter_hash =
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["context_hash"].as_str().unwrap().to_owned();

    let store = PostgresStore::connect(&url).unwrap();
    let a = replica(&dir, &url, "replica-a");
    let mut b = replica(&dir, &url, "replica-b");

    // Submissions, through both replicas.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let (market, review) = (example("market-entry.json"), example("review.json"));
    for i in 0..10 {
        let via = if i % 2 == 0 { &a } else { &b };
        expected.insert(submit(via, COUNTER, None), counter_hash.clone());
    }
    let mut reviews = Vec::new();
    for i in 0..4 {
        let id = submit(if i % 2 == 0 { &b } else { &a }, &review, None);
        expected.insert(id.clone(), REVIEW_HASH.to_owned());
        reviews.push(id);
    }
    let keyed: BTreeSet<String> = [&a, &b, &a].iter().map(|s| submit(s, &market, Some("chaos-market-key"))).collect();
    assert_eq!(keyed.len(), 1, "one job per idempotency key, whichever replica took it");
    for id in &keyed {
        expected.insert(id.clone(), MARKET_HASH.to_owned());
    }
    for _ in 0..3 {
        expected.insert(submit(&b, &market, None), MARKET_HASH.to_owned());
    }
    let ids: Vec<String> = expected.keys().cloned().collect();

    // kill -9 replica A while it runs jobs; a new replica takes its place.
    until("replica-a runs a job", || state(&store, &ids), || !running_on(&store, &ids, "replica-a").is_empty());
    a.crash();
    // What it had running once a commit it sent before dying has landed or not: those jobs must be run again.
    std::thread::sleep(SETTLE);
    let killed = running_on(&store, &ids, "replica-a");
    let c = replica(&dir, &url, "replica-c");
    // A second wave through B (admission queues a job on the replica that took it), so B has work when it is
    // paused whatever the first wave left.
    for _ in 0..6 {
        expected.insert(submit(&b, COUNTER, None), counter_hash.clone());
    }
    let ids: Vec<String> = expected.keys().cloned().collect();

    // SIGSTOP replica B past its lease while it runs jobs: replica C takes them over; then B wakes up.
    until("replica-b runs a job", || state(&store, &ids), || !running_on(&store, &ids, "replica-b").is_empty());
    b.signal("-STOP");
    std::thread::sleep(SETTLE);
    let paused = running_on(&store, &ids, "replica-b");
    until(
        "replica-c takes over the paused replica's jobs",
        || format!("paused {paused:?}\n{}\n{}", state(&store, &ids), c.log()),
        || {
            paused.iter().all(|id| {
                let owners = claims(&store, id);
                owners.iter().rposition(|o| o == "replica-c") > owners.iter().rposition(|o| o == "replica-b")
                    || store.job(None, id).unwrap().is_some_and(|j| j.status.is_terminal())
            })
        },
    );
    b.signal("-CONT");

    // The questions are answered through whichever replica is up.
    for (i, id) in reviews.iter().enumerate() {
        let via = if i % 2 == 0 { &b } else { &c };
        until(
            "the review job waits",
            || state(&store, &ids),
            || via.get(&format!("/v1/jobs/{id}")).json()["status"] == "waiting",
        );
        let answer = serde_json::json!({"question": REVIEW_QUESTION, "answer": REVIEW_ANSWER}).to_string();
        let r = via.post(&format!("/v1/jobs/{id}/answers"), &answer);
        assert_eq!(r.status, 202, "{}", r.text());
    }

    // SIGTERM replica C: it drains and exits 0; B finishes the rest.
    let mut c = c;
    c.signal("-TERM");
    assert!(c.wait().success(), "a drained replica exits 0:\n{}", c.log());
    until(
        "every job ends",
        || format!("{}\n{}", state(&store, &ids), b.log()),
        || ids.iter().all(|id| store.job(None, id).unwrap().is_some_and(|j| j.status.is_terminal())),
    );

    check_every_job(&store, &expected, &killed, &paused);
    // No job appeared that was not acknowledged.
    let all = store.list(None, &converge_store::ListFilter { limit: 500, ..Default::default() }).unwrap();
    assert_eq!(all.len(), expected.len());
    b.signal("-TERM");
    assert!(b.wait().success(), "{}", b.log());
    store.close();
}

/// Every acknowledged job converged once with the hash of a single-process run, its trail in order, nothing
/// after its end, no write of a stale run after a later claim, and every killed or paused job run again.
fn check_every_job(store: &PostgresStore, expected: &BTreeMap<String, String>, killed: &[String], paused: &[String]) {
    let mut taken_over = 0;
    for (id, hash) in expected {
        let job = store.job(None, id).unwrap().unwrap();
        assert_eq!(job.status, converge_engine::Status::Converged, "{id}: {:?}", job.result);
        assert_eq!(job.context_hash.as_deref(), Some(hash.as_str()), "{id}: the hash of a single-process run");
        let trail = store.events(id, 0).unwrap();
        assert_eq!(trail.iter().filter(|e| e.kind == EventKind::End).count(), 1, "{id}: one end");
        assert_eq!(trail.last().map(|e| e.kind), Some(EventKind::End), "{id}: nothing after its end");
        // Nothing written by a run after a later claim: the attempts of the runs' writes never go back.
        let attempts: Vec<u32> = trail.iter().map(|e| e.attempt).filter(|a| *a > 0).collect();
        assert!(attempts.windows(2).all(|w| w[0] <= w[1]), "{id}: a stale run wrote after a takeover: {attempts:?}");
        let cycles: Vec<u64> = trail
            .iter()
            .filter(|e| e.kind == EventKind::Cycle)
            .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["cycle"].as_u64().unwrap())
            .collect();
        assert_eq!(cycles, (1..=u64::from(job.cycles)).collect::<Vec<_>>(), "{id}: each cycle once, in order");
        // A run lost to the kill, and one lost to the pause (a job can lose both: killed on A, taken over by B,
        // paused there), each needed a later claim.
        let lost = u32::from(killed.contains(id)) + u32::from(paused.contains(id));
        assert!(job.attempts > lost, "{id}: {} runs lost, yet only {} attempts", lost, job.attempts);
        if lost > 0 {
            taken_over += 1;
        }
    }
    assert!(taken_over > 0, "the test caught nothing mid-run");
}
