//! Which store a command uses: `--store` (or `CONVERGE_STORE`) — `sqlite` (the default: a file under `--data`)
//! or a `postgres://` URL (shared by any number of replicas).

use crate::Exit;
use converge_service::Watchers;
use converge_store::{PostgresStore, SqliteStore, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

/// The store option, shared by `serve` and `replay`.
#[derive(clap::Args)]
pub(crate) struct StoreArg {
    /// The store: `sqlite` (a file under --data, one process) or `postgres://user:password@host/db` (shared by
    /// every replica).
    #[arg(long = "store", env = "CONVERGE_STORE", default_value = "sqlite", hide_env_values = true)]
    pub url: String,
}

/// A store for serving: `watchers` hear of every committed event (SQLite calls them as it commits; PostgreSQL's
/// notices reach them through the service).
pub(crate) fn open(arg: &StoreArg, data: &Path, watchers: &Arc<Watchers>) -> Result<Arc<dyn Store>, Exit> {
    if is_postgres(&arg.url) {
        return Ok(Arc::new(PostgresStore::connect(&arg.url).map_err(Exit::failure)?));
    }
    check_sqlite(&arg.url)?;
    let hook = Arc::clone(watchers);
    let store = SqliteStore::open(data, Some(Arc::new(move |e| hook.publish(e)))).map_err(Exit::failure)?;
    Ok(Arc::new(store))
}

/// A store to read a finished job from (`converge replay`): SQLite read-only, even while a server has it open.
pub(crate) fn open_to_read(arg: &StoreArg, data: &Path) -> Result<Arc<dyn Store>, Exit> {
    if is_postgres(&arg.url) {
        return Ok(Arc::new(PostgresStore::connect(&arg.url).map_err(Exit::failure)?));
    }
    check_sqlite(&arg.url)?;
    match SqliteStore::open_existing(data) {
        Ok(s) => Ok(Arc::new(s)),
        Err(e @ StoreError::Missing(_)) => Err(Exit::input(e.to_string())),
        Err(e) => Err(Exit::failure(e)),
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn check_sqlite(url: &str) -> Result<(), Exit> {
    if url == "sqlite" {
        return Ok(());
    }
    Err(Exit::input(format!("--store: {url:?} is neither `sqlite` nor a postgres:// URL")))
}
