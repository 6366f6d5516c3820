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
