//! The SQLite backend: the conformance suite, and what only this backend has (its file, its schema versions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use converge_store::conformance::Opened;
use converge_store::{OnCommit, SqliteStore, Store, StoreError, ToolStatus};
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(name: &str, hook: Option<OnCommit>) -> Opened {
    Opened::new(SqliteStore::open(&dir(name), hook).unwrap())
}

converge_store::conformance_tests!(open);

#[test]
fn a_version_1_store_keeps_its_tools_and_reviews_when_migrated() {
    let dir = dir("migrate");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = r#"{"name":"clock","description":"","tests":[],"requested":[]}"#;
    let report = r#"{"verdict":"needs_review","reasons":["has 0 tests"],"name":"clock","description":"","digest":"d1",
        "size":1,"imports":[],"attempts":[],"tests":[],"limits":{"fuel":100000000,"memory_mb":32,"timeout_ms":1000},
        "requested":[]}"#;
    let v1 = rusqlite::Connection::open(dir.join("converge.db")).unwrap();
    v1.execute_batch(
        "CREATE TABLE tools (seq INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
             tenant TEXT NOT NULL, status TEXT NOT NULL, verdict TEXT NOT NULL, manifest TEXT NOT NULL,
             report TEXT NOT NULL, component BLOB, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
             accepted_ms INTEGER);
         CREATE TABLE tool_reviews (digest TEXT NOT NULL, seq INTEGER NOT NULL, decision TEXT NOT NULL,
             reviewer TEXT NOT NULL, comment TEXT NOT NULL, tenant TEXT NOT NULL, at_ms INTEGER NOT NULL,
             PRIMARY KEY (digest, seq)) WITHOUT ROWID;
         INSERT INTO tool_reviews VALUES ('d1', 0, 'approve', 'ada', 'ok', 'globex', 6);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    v1.execute(
        "INSERT INTO tools VALUES (1, 'd1', 'clock', 'acme', 'accepted', 'needs_review', ?1, ?2, x'00', 5, 6, 6)",
        [manifest, report],
    )
    .unwrap();
    drop(v1);

    let store = SqliteStore::open(&dir, None).unwrap();
    let tools = store.tools(None).unwrap();
    assert_eq!(tools.len(), 1);
    let t = &tools[0];
    assert_eq!((t.digest.as_str(), t.tenant.as_str(), t.status), ("d1", "acme", ToolStatus::Accepted));
    assert_eq!((t.reviews.len(), t.reviews[0].reviewer.as_str(), t.reviews[0].tenant.as_str()), (1, "ada", "globex"));
    assert_eq!(store.tool_component("acme", "d1").unwrap(), Some(vec![0]));
    assert_eq!(store.tool_component("globex", "d1").unwrap(), None);
    store.close();
    let version: i64 = rusqlite::Connection::open(dir.join("converge.db"))
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
}

#[test]
fn a_store_from_a_newer_version_is_refused_by_name() {
    let dir = dir("newer");
    std::fs::create_dir_all(&dir).unwrap();
    rusqlite::Connection::open(dir.join("converge.db")).unwrap().execute_batch("PRAGMA user_version = 9;").unwrap();
    match SqliteStore::open(&dir, None) {
        Err(StoreError::NewerSchema { found: 9, supported: 4, location }) => assert!(location.ends_with("converge.db")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn replay_opens_only_an_existing_store() {
    let dir = dir("missing");
    assert!(matches!(SqliteStore::open_existing(&dir), Err(StoreError::Missing(_))));
    assert!(!dir.join("converge.db").exists(), "nothing created");
}

#[test]
fn one_process_owns_a_store_and_replay_reads_it_meanwhile() {
    let dir = dir("owner");
    let first = SqliteStore::open(&dir, None).unwrap();
    match SqliteStore::open(&dir, None) {
        Err(StoreError::Db { message, .. }) => assert!(message.contains("another converge process"), "{message}"),
        other => panic!("a second writer: {other:?}"),
    }
    let reader = SqliteStore::open_existing(&dir).unwrap();
    assert!(reader.list(None, &converge_store::ListFilter { limit: 1, ..Default::default() }).unwrap().is_empty());
    assert!(
        matches!(converge_store::wait(reader.cancel("t", "j", 0)), Err(StoreError::Closed)),
        "a reader writes nothing"
    );
    first.close();
    assert!(SqliteStore::open(&dir, None).is_ok(), "free once the first closed");
}

#[test]
fn a_restart_voids_the_leases_of_the_process_that_died() {
    use converge_store::{ClaimRequest, NewJob, wait};
    let dir = dir("restart-leases");
    let store = SqliteStore::open(&dir, None).unwrap();
    let job = NewJob {
        id: "j1".into(),
        tenant: "t".into(),
        spec: "{}".into(),
        spec_hash: "h".into(),
        goal: "g".into(),
        labels: std::collections::BTreeMap::new(),
        idempotency_key: None,
        traceparent: None,
        now_ms: 1,
    };
    wait(store.create_job(job)).unwrap();
    let claim = |now_ms| ClaimRequest {
        owner: "a".into(),
        job: Some("j1".into()),
        lease_ms: 3_600_000,
        max_attempts: 3,
        now_ms,
    };
    assert!(wait(store.claim(claim(2))).unwrap().is_some());
    store.close();
    let store = SqliteStore::open(&dir, None).unwrap();
    assert_eq!(store.unfinished().unwrap(), ["j1"]);
    let again = wait(store.claim(claim(3))).unwrap().expect("its lease died with its process");
    assert_eq!(again.lease.attempt, 2);
}

#[test]
fn the_log_is_copied_into_the_database_off_the_writer() {
    // Below the writer's own checkpoint threshold (10,000 pages), committed pages stay in the write-ahead log
    // unless the checkpointer copies them into the database file.
    let dir = dir("checkpoint");
    let store = SqliteStore::open(&dir, None).unwrap();
    let size = || std::fs::metadata(dir.join("converge.db")).unwrap().len();
    let before = size();
    let spec = format!("{{\"goal\": \"{}\"}}", "x".repeat(16 * 1024));
    for i in 0..64 {
        let job = converge_store::NewJob {
            id: format!("j{i}"),
            tenant: "t".into(),
            spec: spec.clone(),
            spec_hash: format!("h{i}"),
            goal: "g".into(),
            labels: std::collections::BTreeMap::new(),
            idempotency_key: None,
            traceparent: None,
            now_ms: 1,
        };
        converge_store::wait(store.create_job(job)).unwrap();
    }
    let mut copied = false;
    for _ in 0..100 {
        if size() >= before + 64 * 16 * 1024 {
            copied = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(copied, "the database file holds the jobs' pages ({} bytes, {before} before)", size());
    store.close();
}
