//! The PostgreSQL backend: the conformance suite on a throwaway server (one per test), and what only a shared
//! store has — replicas claiming at once, notices across processes, migrations from several at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use converge_store::conformance::Opened;
use converge_store::{OnCommit, PostgresStore, Store};
use converge_testpg::PgServer;

fn open(name: &str, hook: Option<OnCommit>) -> Opened {
    let Some(server) = PgServer::start() else {
        // Said on stderr by `start`: without PostgreSQL the case runs on SQLite.
        return Opened::new(converge_store::SqliteStore::open(&tmp(name), hook).unwrap());
    };
    let store = PostgresStore::connect(&server.database(name)).unwrap();
    if let Some(hook) = hook {
        store.listen(std::sync::Arc::new(move |n| {
            if let converge_store::Notice::Event(e) = n {
                hook(e);
            }
        }));
    }
    Opened::with(store, server)
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pg-fallback").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

converge_store::conformance_tests!(open);

fn job(id: &str) -> converge_store::NewJob {
    converge_store::NewJob {
        id: id.into(),
        tenant: "t".into(),
        spec: "{}".into(),
        spec_hash: "h".into(),
        goal: "g".into(),
        labels: std::collections::BTreeMap::new(),
        idempotency_key: None,
        traceparent: None,
        now_ms: 1,
    }
}

fn claim_any(store: &PostgresStore, owner: &str) -> Option<converge_store::Started> {
    let req =
        converge_store::ClaimRequest { owner: owner.into(), job: None, lease_ms: 60_000, max_attempts: 3, now_ms: 2 };
    converge_store::wait(store.claim(req)).unwrap()
}

#[test]
fn replicas_claiming_at_once_never_get_the_same_job() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("claims");
    let store = PostgresStore::connect(&url).unwrap();
    for i in 0..60 {
        converge_store::wait(store.create_job(job(&format!("j{i:02}")))).unwrap();
    }
    let claimers: Vec<_> = (0..3)
        .map(|r| {
            let url = url.clone();
            std::thread::spawn(move || {
                let replica = PostgresStore::connect(&url).unwrap();
                let mut got = Vec::new();
                while let Some(s) = claim_any(&replica, &format!("replica-{r}")) {
                    got.push(s.record.id);
                }
                got
            })
        })
        .collect();
    let mut all: Vec<String> = claimers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!((claimed, all.len()), (60, 60), "each job claimed exactly once");
    assert_eq!(store.queued().unwrap(), 0);
}

#[test]
fn replicas_starting_at_once_migrate_the_schema_once() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("migrate");
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::connect(&url).map(drop))
        })
        .collect();
    for s in starts {
        s.join().unwrap().unwrap();
    }
    let store = PostgresStore::connect(&url).unwrap();
    converge_store::wait(store.create_job(job("j1"))).unwrap();
    assert!(store.job(None, "j1").unwrap().is_some());
}

#[test]
fn what_one_replica_commits_reaches_the_others() {
    use converge_store::Notice;
    let Some(server) = PgServer::start() else { return };
    let url = server.database("notices");
    let (a, b) = (PostgresStore::connect(&url).unwrap(), PostgresStore::connect(&url).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    a.listen(std::sync::Arc::new(move |n: &Notice| {
        let _ = tx.send(n.clone());
    }));
    converge_store::wait(b.create_job(job("j1"))).unwrap();
    converge_store::wait(b.cancel("t", "j1", 3)).unwrap();
    let mut heard = Vec::new();
    while let Ok(n) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
        heard.push(n);
        if heard.iter().any(|n| matches!(n, Notice::Cancel(_))) {
            break;
        }
    }
    assert!(heard.contains(&Notice::Claimable), "{heard:?}");
    assert!(heard.contains(&Notice::Cancel("j1".into())), "{heard:?}");
    let events: Vec<(String, u64)> = heard
        .iter()
        .filter_map(|n| match n {
            Notice::Event(e) => Some((e.job.clone(), e.seq)),
            _ => None,
        })
        .collect();
    assert_eq!(events, [("j1".to_owned(), 1), ("j1".to_owned(), 2)], "created, cancel_requested");
}

#[test]
fn an_unreachable_database_is_a_named_error() {
    match PostgresStore::connect("postgres://converge:secret@127.0.0.1:1/nothing") {
        Err(converge_store::StoreError::Db { context, .. }) => {
            assert!(context.contains("connecting to postgres://converge:***@127.0.0.1:1/nothing"), "{context}");
            assert!(!context.contains("secret"), "the password never shows");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_store_whose_sessions_the_database_ended_reconnects_and_goes_on() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("reconnect");
    let store = PostgresStore::connect(&url).unwrap();
    for i in 0..8 {
        converge_store::wait(store.create_job(job(&format!("before{i}")))).unwrap();
    }
    assert_eq!(store.queued().unwrap(), 8);
    // What the database does to a session a stopped replica left idle in a transaction, or on a restart.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let ended: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ended >= 4, "the writers' sessions were ended ({ended})");
    for i in 0..8 {
        converge_store::wait(store.create_job(job(&format!("after{i}")))).unwrap();
    }
    assert_eq!(store.queued().unwrap(), 16);
}

#[test]
fn a_session_left_idle_in_a_transaction_holding_a_job_is_ended_and_the_job_claimed() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("idle");
    let store = PostgresStore::connect(&url).unwrap();
    converge_store::wait(store.create_job(job("held"))).unwrap();
    // A replica stopped in the middle of a write of the job: its transaction holds the row.
    let mut stopped = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    stopped.batch_execute(&PostgresStore::session_settings()).unwrap();
    let mut tx = stopped.transaction().unwrap();
    tx.execute("SELECT 1 FROM jobs WHERE id = 'held' FOR UPDATE", &[]).unwrap();
    assert!(claim_any(&store, "other").is_none(), "a locked row is skipped while its session lives");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let claimed = loop {
        if let Some(s) = claim_any(&store, "other") {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the idle session was never ended");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(claimed.record.id, "held");
    assert!(tx.commit().is_err(), "the stopped session's transaction was rolled back");
}

#[test]
fn a_failed_write_in_a_group_is_undone_alone_and_the_others_commit() {
    let Some(server) = PgServer::start() else { return };
    let store = PostgresStore::connect(&server.database("groups")).unwrap();
    let mut leases = Vec::new();
    for i in 0..24 {
        converge_store::wait(store.create_job(job(&format!("g{i:02}")))).unwrap();
    }
    while let Some(s) = claim_any(&store, "me") {
        leases.push((s.record.id.clone(), s.lease));
    }
    assert_eq!(leases.len(), 24);
    // Sent at once, so they meet in groups: every third with a lease that is not the job's.
    let cycle = |n| converge_store::CycleRecord { cycle: n, trace: "{}".into(), questions: Vec::new() };
    let replies: Vec<_> = leases
        .iter()
        .enumerate()
        .map(|(i, (id, lease))| {
            let mut lease = lease.clone();
            if i % 3 == 0 {
                lease.token = "not-the-token".into();
            }
            store.cycles(id, &lease, vec![cycle(1), cycle(2)], 5)
        })
        .collect();
    for (i, ((id, _), reply)) in leases.iter().zip(replies).enumerate() {
        let out = converge_store::wait(reply);
        let cycles: Vec<u64> = store
            .events(id, 0)
            .unwrap()
            .iter()
            .filter(|e| e.kind == converge_store::EventKind::Cycle)
            .map(|e| e.seq)
            .collect();
        if i % 3 == 0 {
            assert!(matches!(out, Err(converge_store::StoreError::LeaseLost(_))), "{id}: {out:?}");
            assert!(cycles.is_empty(), "{id}: a refused write left {cycles:?}");
        } else {
            out.unwrap();
            assert_eq!(cycles.len(), 2, "{id}: both cycles, once each");
            assert!(cycles[0] < cycles[1], "{id}: in order");
        }
    }
}

#[test]
fn a_version_1_schema_is_migrated_and_its_trails_go_on_where_they_were() {
    let Some(server) = PgServer::start() else { return };
    let url = server.database("migrate_v1");
    let store = PostgresStore::connect(&url).unwrap();
    converge_store::wait(store.create_job(job("old"))).unwrap();
    let started = claim_any(&store, "me").unwrap();
    let before = store.events("old", 0).unwrap().len();
    assert!(before >= 2, "created and started");
    store.close();
    // What version 1 was: no `last_seq`.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "ALTER TABLE jobs DROP COLUMN last_seq; ALTER TABLE jobs DROP COLUMN traceparent; \
             UPDATE converge_schema SET version = 1",
        )
        .unwrap();
    let store = PostgresStore::connect(&url).unwrap();
    let cycle = converge_store::CycleRecord { cycle: 1, trace: "{}".into(), questions: Vec::new() };
    converge_store::wait(store.cycles("old", &started.lease, vec![cycle], 3)).unwrap();
    let seqs: Vec<u64> = store.events("old", 0).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=u64::try_from(before).unwrap() + 1).collect::<Vec<_>>(),
        "the trail goes on at its next position"
    );
    assert_eq!(store.job(None, "old").unwrap().unwrap().traceparent, None, "the column is back, empty");
    let version: i32 = admin.query_one("SELECT version FROM converge_schema", &[]).unwrap().get(0);
    assert_eq!(version, 4);
}
