//! The embedded store: one SQLite file in WAL mode, one writer thread that commits writes in groups (every
//! write waiting when a transaction starts goes into it, and each waits for the one fsync), and a small pool of
//! read connections. It must never answer a write before its transaction has committed. What a write decides
//! comes from [`rules`]; this file only stores it.

use crate::records::{
    Admission, AnswerOutcome, CancelOutcome, ClaimRequest, CycleRecord, Decision, Event, EventKind, JobRecord,
    JobSummary, Lease, ListFilter, NewJob, NewRun, NewTool, Outcome, Park, Renewal, ReviewOutcome, ReviewRecord,
    Started, ToolEvent, ToolHistory, ToolRecord, ToolStatus,
};
use crate::rules::{self, payload};
use crate::tool::{Manifest, Report, Verdict};
use crate::{OnCommit, Reply, Store, StoreError};
use converge_engine::Status;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;

/// Most writes in one transaction.
const MAX_GROUP: usize = 1024;
/// How often the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// WAL pages past which the writer checkpoints by itself: only if the checkpointer cannot keep up.
const WAL_BACKSTOP_PAGES: i64 = 10_000;
/// Read connections kept open.
const READERS: usize = 32;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    tenant       TEXT NOT NULL,
    status       TEXT NOT NULL,
    goal         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    spec_hash    TEXT NOT NULL,
    labels       TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    cycles       INTEGER NOT NULL DEFAULT 0,
    cancel       INTEGER NOT NULL DEFAULT 0,
    components   TEXT,
    context_hash TEXT,
    result       TEXT,
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_ms INTEGER,
    open_runs        INTEGER NOT NULL DEFAULT 0,
    traceparent      TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS labels (
    job   TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS labels_by_value ON labels (key, value);
CREATE TABLE IF NOT EXISTS events (
    job   TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    kind  TEXT NOT NULL,
    data  TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, seq)
);
CREATE TABLE IF NOT EXISTS questions (
    job       TEXT NOT NULL,
    id        TEXT NOT NULL,
    prompt    TEXT NOT NULL,
    agent     TEXT NOT NULL,
    cycle     INTEGER NOT NULL,
    answer    TEXT,
    PRIMARY KEY (job, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    tenant    TEXT NOT NULL,
    key       TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    job       TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tools (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    digest      TEXT NOT NULL,
    name        TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    status      TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    report      TEXT NOT NULL,
    component   BLOB,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    accepted_ms INTEGER,
    UNIQUE (tenant, digest)
);
CREATE TABLE IF NOT EXISTS tool_reviews (
    owner    TEXT NOT NULL,
    digest   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    decision TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    comment  TEXT NOT NULL,
    tenant   TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (owner, digest, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tool_events (
    tenant   TEXT NOT NULL,
    digest   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    data     TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (tenant, digest, seq)
) WITHOUT ROWID;
";

/// The schema version [`SCHEMA`] creates. 4: `jobs.traceparent`.
const SCHEMA_VERSION: i64 = 4;

/// Version 2 to 3: leases (owner, token, expiry), the runs that ended without a stop, and the attempt that wrote
/// each event. Each column is added only where it is missing (a version 1 store gets the tables of [`SCHEMA`]
/// whole).
const COLUMNS_3: [(&str, &str, &str); 5] = [
    ("jobs", "lease_owner", "TEXT"),
    ("jobs", "lease_token", "TEXT"),
    ("jobs", "lease_expires_ms", "INTEGER"),
    ("jobs", "open_runs", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "attempt", "INTEGER NOT NULL DEFAULT 0"),
];

/// Version 3 to 4: the trace context a job was submitted under. Added only where it is missing.
const COLUMNS_4: [(&str, &str, &str); 1] = [("jobs", "traceparent", "TEXT")];

/// Version 1 to 2: a tool belongs to the tenant that submitted it (unique by tenant and digest, not by digest),
/// and its reviews are keyed by that owner. Run as: [`MIGRATE_1_TO_2_SET_ASIDE`], [`SCHEMA`] (which creates the
/// new tables), [`MIGRATE_1_TO_2_COPY`], in one transaction. Version 1 had one record per digest, so the owner
/// of each review is exactly its tool's tenant.
const MIGRATE_1_TO_2_SET_ASIDE: &str = "
ALTER TABLE tools RENAME TO tools_v1;
ALTER TABLE tool_reviews RENAME TO tool_reviews_v1;
";
const MIGRATE_1_TO_2_COPY: &str = "
INSERT INTO tools (seq, digest, name, tenant, status, verdict, manifest, report, component, created_ms, updated_ms,
                   accepted_ms)
    SELECT seq, digest, name, tenant, status, verdict, manifest, report, component, created_ms, updated_ms,
           accepted_ms FROM tools_v1;
INSERT INTO tool_reviews (owner, digest, seq, decision, reviewer, comment, tenant, at_ms)
    SELECT t.tenant, r.digest, r.seq, r.decision, r.reviewer, r.comment, r.tenant, r.at_ms
    FROM tool_reviews_v1 r JOIN tools t ON t.digest = r.digest;
DROP TABLE tools_v1;
DROP TABLE tool_reviews_v1;
";

type Tx<T> = tokio::sync::oneshot::Sender<Result<T, StoreError>>;

/// A write on its way to the writer: applied inside a group's transaction, answered after the commit.
trait Write: Send {
    /// Apply in a savepoint (a failed write is undone alone); return how to answer once the commit is known.
    fn apply(self: Box<Self>, c: &Connection, events: &mut Vec<Event>) -> Done;
    /// Answer without applying: the writer stopped, or the group's transaction could not begin.
    fn refuse(self: Box<Self>, e: StoreError);
}

/// A write whose answer is a `T`.
struct Op<T, F> {
    reply: Tx<T>,
    f: F,
}

impl<T, F> Write for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection, &mut Vec<Event>) -> Result<T, StoreError> + Send,
{
    fn apply(self: Box<Self>, c: &Connection, events: &mut Vec<Event>) -> Done {
        let Op { reply, f } = *self;
        let mark = events.len();
        let out = (|| {
            exec(c, "SAVEPOINT op", []).map_err(|e| db(&e))?;
            match f(c, events) {
                Ok(v) => {
                    exec(c, "RELEASE op", []).map_err(|e| db(&e))?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = c.execute_batch("ROLLBACK TO op; RELEASE op");
                    Err(e)
                }
            }
        })();
        if out.is_err() {
            events.truncate(mark);
        }
        Box::new(move |committed| {
            let _ = reply.send(committed.and(out));
        })
    }

    fn refuse(self: Box<Self>, e: StoreError) {
        let _ = self.reply.send(Err(e));
    }
}

/// SQLite in `<dir>/converge.db`, WAL, synchronous = FULL.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Box<dyn Write>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Stops the checkpointer when dropped, and its thread.
    checkpointer: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    readers: Mutex<Vec<Connection>>,
    /// `converge.lock`, locked while this store is open for writing: one process per store.
    lock: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// `execute` through the connection's statement cache (the writer runs the same few statements all day).
fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

/// `query_row` through the statement cache.
fn row<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
}

fn db(e: &rusqlite::Error) -> StoreError {
    StoreError::Db { context: "sqlite".into(), message: e.to_string() }
}

fn corrupt(what: impl Into<String>, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into(), message: message.into() }
}

fn status_from(job: &str, text: &str) -> Result<Status, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| corrupt(format!("job {job}"), format!("unknown status {text:?}")))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Lock `<dir>/converge.lock` for this process, or say which other one holds it.
fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.join("converge.lock");
    let failed = |message: String| StoreError::Db { context: format!("locking {}", path.display()), message };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| failed(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(failed(
            "another converge process has this store open (one process per SQLite store; use PostgreSQL to run \
             several)"
                .into(),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e.to_string())),
    }
}

/// Add `column` to `table` unless it is there.
fn add_column(c: &Connection, table: &str, column: &str, decl: &str) -> Result<(), String> {
    let mut stmt = c.prepare(&format!("PRAGMA table_info({table})")).map_err(|e| e.to_string())?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(1))
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if !names.iter().any(|n| n == column) {
        c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}")).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Db { context: format!("opening {}", path.display()), message: e.to_string() })?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| db(&e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Open (or create) the store under `dir`, which is created if missing. `on_commit` sees every committed
    /// event.
    ///
    /// # Errors
    /// The directory or the database cannot be created, or the file is not a Converge store.
    pub fn open(dir: &Path, on_commit: Option<OnCommit>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Db { context: format!("creating {}", dir.display()), message: e.to_string() })?;
        let path = dir.join("converge.db");
        let lock = lock(dir)?;
        let conn = open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| db(&e))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| db(&e))?;
        // The checkpointer copies the log into the database off the writer's commits (a checkpoint inside a
        // commit held every waiting write for tens of milliseconds); the writer checkpoints only past this.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES).map_err(|e| db(&e))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| db(&e))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| db(&e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                location: path.display().to_string(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == 1 {
            let migrate = format!("BEGIN IMMEDIATE; {MIGRATE_1_TO_2_SET_ASIDE} {SCHEMA} {MIGRATE_1_TO_2_COPY} COMMIT;");
            conn.execute_batch(&migrate).map_err(|e| StoreError::Db {
                context: format!("migrating {} to schema version 2", path.display()),
                message: e.to_string(),
            })?;
        }
        conn.execute_batch(SCHEMA).map_err(|e| StoreError::Db {
            context: format!("creating the schema in {}", path.display()),
            message: e.to_string(),
        })?;
        for (table, column, decl) in COLUMNS_3.into_iter().chain(COLUMNS_4) {
            add_column(&conn, table, column, decl)
                .map_err(|e| StoreError::Db { context: format!("migrating {}", path.display()), message: e })?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| db(&e))?;
        // One process owns this store: the leases of an earlier one are void (its runs died with it), so its
        // running jobs are claimable at once.
        conn.execute("UPDATE jobs SET lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL", [])
            .map_err(|e| db(&e))?;
        let checkpointer = checkpointer(&path)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("converge-store".into())
            .spawn(move || writer(conn, &rx, on_commit.as_ref()))
            .map_err(|e| StoreError::Db { context: "starting the store writer".into(), message: e.to_string() })?;
        Ok(Self {
            path,
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: Mutex::new(Vec::new()),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Open an existing store to read it (for `converge replay`, also while a server uses it); fails if there is
    /// none. Every write answers [`StoreError::Closed`].
    ///
    /// # Errors
    /// No store under `dir`, it cannot be read, or it is of another schema version than this build's.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("converge.db");
        if !path.is_file() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
        let conn = open(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| db(&e))?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                location: path.display().to_string(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(Self {
            path,
            writer: Mutex::new(None),
            thread: Mutex::new(None),
            checkpointer: Mutex::new(None),
            readers: Mutex::new(vec![conn]),
            lock: Mutex::new(None),
        })
    }

    /// Stop the writer after the writes already sent, wait for it, and let another process open the store.
    pub fn close(&self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
        if let Some((stop, thread)) = self.checkpointer.lock().ok().and_then(|mut c| c.take()) {
            drop(stop);
            let _ = thread.join();
        }
        if let Ok(mut l) = self.lock.lock() {
            l.take();
        }
    }

    /// Queue `f` for the writer; the reply resolves after the transaction holding it commits.
    fn send<T, F>(&self, f: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Vec<Event>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let op: Box<dyn Write> = Box::new(Op { reply, f });
        let guard = self.writer.lock();
        match guard.as_ref().ok().and_then(|w| w.as_ref()) {
            Some(w) => {
                if let Err(mpsc::SendError(op)) = w.send(op) {
                    op.refuse(StoreError::Closed);
                }
            }
            None => op.refuse(StoreError::Closed),
        }
        rx
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = match self.readers.lock().ok().and_then(|mut r| r.pop()) {
            Some(c) => c,
            None => open(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
        };
        let out = f(&conn);
        if let Ok(mut r) = self.readers.lock()
            && r.len() < READERS
        {
            r.push(conn);
        }
        out
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// A thread with its own connection that runs a passive checkpoint every [`CHECKPOINT_EVERY`] (it copies what
/// the log holds into the database without waiting for, or holding up, the writer or a reader) until the sender
/// it returns is dropped.
fn checkpointer(path: &Path) -> Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>), StoreError> {
    let conn = open(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("converge-checkpoint".into())
        .spawn(move || {
            let mut failing = false;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "a checkpoint failed; the writer checkpoints past {WAL_BACKSTOP_PAGES} pages");
                    }
                    Err(_) => {}
                }
            }
        })
        .map_err(|e| StoreError::Db { context: "starting the store checkpointer".into(), message: e.to_string() })?;
    Ok((stop, thread))
}

/// A write applied inside the group's transaction, waiting for the commit to be answered.
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

fn writer(mut conn: Connection, rx: &mpsc::Receiver<Box<dyn Write>>, on_commit: Option<&OnCommit>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                let e = db(&e);
                for op in ops {
                    op.refuse(e.clone());
                }
                continue;
            }
        };
        let mut done: Vec<Done> = Vec::with_capacity(ops.len());
        let mut events: Vec<Event> = Vec::new();
        for op in ops {
            done.push(op.apply(&tx, &mut events));
        }
        let committed = tx.commit().map_err(|e| db(&e));
        if committed.is_ok()
            && let Some(hook) = on_commit
        {
            for e in &events {
                hook(e);
            }
        }
        for d in done {
            d(committed.clone());
        }
    }
}

fn push_event(
    c: &Connection,
    job: &str,
    attempt: u32,
    (kind, data): (EventKind, String),
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    let seq = next_seq(c, job)?;
    insert_event(c, Event { job: job.to_owned(), seq, kind, data, at_ms: now_ms, attempt }, events)
}

fn next_seq(c: &Connection, job: &str) -> Result<u64, StoreError> {
    row(c, "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job = ?1", [job], |r| r.get::<_, i64>(0))
        .map(to_u64)
        .map_err(|e| db(&e))
}

fn insert_event(c: &Connection, e: Event, events: &mut Vec<Event>) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO events (job, seq, kind, data, at_ms, attempt) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![e.job, to_i64(e.seq), e.kind.as_str(), e.data, to_i64(e.at_ms), e.attempt],
    )
    .map_err(|e| db(&e))?;
    events.push(e);
    Ok(())
}

fn status_of(c: &Connection, job: &str, tenant: Option<&str>) -> Result<Option<Status>, StoreError> {
    let row: Option<(String, String)> =
        row(c, "SELECT status, tenant FROM jobs WHERE id = ?1", [job], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| db(&e))?;
    match row {
        Some((status, owner)) if tenant.is_none_or(|t| t == owner) => Ok(Some(status_from(job, &status)?)),
        _ => Ok(None),
    }
}

fn set_status(c: &Connection, job: &str, status: Status, now_ms: u64) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE jobs SET status = ?2, updated_ms = ?3 WHERE id = ?1",
        params![job, status.as_str(), to_i64(now_ms)],
    )
    .map_err(|e| db(&e))?;
    Ok(())
}

fn create(c: &Connection, job: &NewJob, events: &mut Vec<Event>) -> Result<Admission, StoreError> {
    if let Some(key) = &job.idempotency_key {
        let known: Option<(String, String)> = c
            .query_row(
                "SELECT spec_hash, job FROM idempotency WHERE tenant = ?1 AND key = ?2",
                params![job.tenant, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| db(&e))?;
        if let Some((hash, id)) = known {
            if hash != job.spec_hash {
                return Ok(Admission::KeyConflict { id });
            }
            let status = status_of(c, &id, None)?
                .ok_or_else(|| corrupt(format!("job {id}"), "idempotency key of a missing job"))?;
            return Ok(Admission::Existing { id, status });
        }
        exec(
            c,
            "INSERT INTO idempotency (tenant, key, spec_hash, job) VALUES (?1, ?2, ?3, ?4)",
            params![job.tenant, key, job.spec_hash, job.id],
        )
        .map_err(|e| db(&e))?;
    }
    let labels = serde_json::to_string(&job.labels).map_err(|e| corrupt(format!("job {}", job.id), e.to_string()))?;
    exec(
        c,
        "INSERT INTO jobs (id, tenant, status, goal, spec, spec_hash, labels, created_ms, updated_ms, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
        params![
            job.id,
            job.tenant,
            Status::Queued.as_str(),
            job.goal,
            job.spec,
            job.spec_hash,
            labels,
            to_i64(job.now_ms),
            job.traceparent
        ],
    )
    .map_err(|e| db(&e))?;
    for (k, v) in &job.labels {
        exec(c, "INSERT INTO labels (job, key, value) VALUES (?1, ?2, ?3)", params![job.id, k, v])
            .map_err(|e| db(&e))?;
    }
    push_event(c, &job.id, 0, payload::created(), job.now_ms, events)?;
    Ok(Admission::Created)
}

const JOB_COLUMNS: &str = "id, seq, tenant, status, spec, goal, labels, created_ms, updated_ms, attempts, cycles, \
                           cancel, components, context_hash, result, traceparent";

/// A job row, with its status, labels and components still as text.
type JobRow = (JobRecord, String, String, Option<String>);

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok((
        JobRecord {
            id: r.get(0)?,
            seq: r.get(1)?,
            tenant: r.get(2)?,
            status: Status::Queued,
            spec: r.get(4)?,
            goal: r.get(5)?,
            labels: BTreeMap::new(),
            created_ms: to_u64(r.get(7)?),
            updated_ms: to_u64(r.get(8)?),
            attempts: u32::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
            cycles: u32::try_from(r.get::<_, i64>(10)?).unwrap_or(0),
            cancel_requested: r.get::<_, i64>(11)? != 0,
            components: BTreeMap::new(),
            context_hash: r.get(13)?,
            result: r.get(14)?,
            traceparent: r.get(15)?,
        },
        r.get(3)?,
        r.get(6)?,
        r.get(12)?,
    ))
}

fn load_job(c: &Connection, tenant: Option<&str>, id: &str) -> Result<Option<JobRecord>, StoreError> {
    let row = row(c, &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], job_row)
        .optional()
        .map_err(|e| db(&e))?;
    let Some((mut job, status, labels, components)) = row else { return Ok(None) };
    if tenant.is_some_and(|t| t != job.tenant) {
        return Ok(None);
    }
    job.status = status_from(id, &status)?;
    job.labels = serde_json::from_str(&labels).map_err(|e| corrupt(format!("job {id}"), format!("labels: {e}")))?;
    if let Some(components) = components {
        job.components =
            serde_json::from_str(&components).map_err(|e| corrupt(format!("job {id}"), format!("components: {e}")))?;
    }
    Ok(Some(job))
}

fn load_answers(c: &Connection, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT id, answer FROM questions WHERE job = ?1 AND answer IS NOT NULL")
        .map_err(|e| db(&e))?;
    let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| db(&e))?;
    rows.collect::<Result<BTreeMap<String, String>, _>>().map_err(|e| db(&e))
}

/// The run holding `lease` still owns the job: its token is the job's.
fn fence(c: &Connection, id: &str, lease: &Lease) -> Result<(), StoreError> {
    let token: Option<Option<String>> =
        row(c, "SELECT lease_token FROM jobs WHERE id = ?1", [id], |r| r.get(0)).optional().map_err(|e| db(&e))?;
    match token {
        Some(Some(t)) if t == lease.token => Ok(()),
        _ => Err(StoreError::LeaseLost(id.to_owned())),
    }
}

/// The oldest claimable job (queued, or running under an expired or void lease), if any.
fn next_claimable(c: &Connection, now_ms: u64) -> Result<Option<String>, StoreError> {
    row(
        c,
        "SELECT id FROM jobs WHERE status = ?1 OR (status = ?2 AND (lease_expires_ms IS NULL OR lease_expires_ms < ?3))
         ORDER BY seq LIMIT 1",
        params![Status::Queued.as_str(), Status::Running.as_str(), to_i64(now_ms)],
        |r| r.get(0),
    )
    .optional()
    .map_err(|e| db(&e))
}

/// Claim under a fresh lease, or under `token` (a run that started before its job was stored).
fn claim(
    c: &Connection,
    req: &ClaimRequest,
    token: Option<&str>,
    events: &mut Vec<Event>,
) -> Result<Option<Started>, StoreError> {
    loop {
        let id = match &req.job {
            Some(id) => id.clone(),
            None => match next_claimable(c, req.now_ms)? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        let lease: Option<(Option<i64>, i64)> =
            row(c, "SELECT lease_expires_ms, open_runs FROM jobs WHERE id = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(|e| db(&e))?;
        let (Some(record), Some((expires, open_runs))) = (load_job(c, None, &id)?, lease) else { return Ok(None) };
        let lapsed = expires.is_none_or(|e| to_u64(e) < req.now_ms);
        if !rules::claimable(record.status, lapsed) {
            if req.job.is_some() {
                return Ok(None);
            }
            continue;
        }
        let open_runs = u32::try_from(open_runs).unwrap_or(u32::MAX);
        if rules::attempts_exhausted(open_runs, req.max_attempts) {
            let end = rules::exhausted(&id, open_runs, req.now_ms);
            end_run(c, &id, &end)?;
            push_event(c, &id, 0, payload::stop(&end), req.now_ms, events)?;
            if req.job.is_some() {
                return Ok(None);
            }
            continue;
        }
        let lease = Lease { token: token.map_or_else(rules::new_token, str::to_owned), attempt: record.attempts + 1 };
        exec(
            c,
            "UPDATE jobs SET status = ?2, attempts = ?3, open_runs = open_runs + 1, lease_owner = ?4,
                 lease_token = ?5, lease_expires_ms = ?6, updated_ms = ?7
             WHERE id = ?1",
            params![
                id,
                Status::Running.as_str(),
                lease.attempt,
                req.owner,
                lease.token,
                to_i64(req.now_ms.saturating_add(req.lease_ms)),
                to_i64(req.now_ms)
            ],
        )
        .map_err(|e| db(&e))?;
        push_event(c, &id, lease.attempt, payload::started(lease.attempt, &req.owner), req.now_ms, events)?;
        let mut record = record;
        record.status = Status::Running;
        record.attempts = lease.attempt;
        let answers = load_answers(c, &id)?;
        return Ok(Some(Started { record, answers, lease }));
    }
}

/// A job and a run that started before it was stored, in one write. Without an idempotency key the job is new,
/// so its row goes in as the run left it and its trail after it, each event numbered here: what the steps of
/// [`create_run_by_steps`] would leave, in a third of the statements.
fn create_run(c: &Connection, job: &NewJob, run: &NewRun, events: &mut Vec<Event>) -> Result<Admission, StoreError> {
    if job.idempotency_key.is_some() {
        return create_run_by_steps(c, job, run, events);
    }
    let id = job.id.as_str();
    let what = || format!("job {id}");
    let labels = serde_json::to_string(&job.labels).map_err(|e| corrupt(what(), e.to_string()))?;
    let components = serde_json::to_string(&run.components).map_err(|e| corrupt(what(), e.to_string()))?;
    let last_cycle = run.cycles.iter().map(|r| r.cycle).max().unwrap_or(0);
    let (status, cycles, hash, result, updated_ms) = match &run.stop {
        Some(o) => {
            (o.status, last_cycle.max(o.cycles), Some(o.context_hash.as_str()), Some(o.result.as_str()), o.now_ms)
        }
        None => (Status::Running, last_cycle, None, None, run.now_ms),
    };
    // A stop ends the lease; a run still going holds it.
    let lease = run
        .stop
        .is_none()
        .then(|| (run.owner.as_str(), run.lease.token.as_str(), to_i64(run.now_ms.saturating_add(run.lease_ms))));
    exec(
        c,
        "INSERT INTO jobs (id, tenant, status, goal, spec, spec_hash, labels, created_ms, updated_ms, attempts, cycles,
                           components, context_hash, result, lease_owner, lease_token, lease_expires_ms, open_runs,
                           traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        params![
            id,
            job.tenant,
            status.as_str(),
            job.goal,
            job.spec,
            job.spec_hash,
            labels,
            to_i64(job.now_ms),
            to_i64(updated_ms),
            run.lease.attempt,
            i64::from(cycles),
            components,
            hash,
            result,
            lease.map(|l| l.0),
            lease.map(|l| l.1),
            lease.map(|l| l.2),
            i64::from(lease.is_some()),
            job.traceparent
        ],
    )
    .map_err(|e| db(&e))?;
    for (k, v) in &job.labels {
        exec(c, "INSERT INTO labels (job, key, value) VALUES (?1, ?2, ?3)", params![id, k, v]).map_err(|e| db(&e))?;
    }
    let attempt = run.lease.attempt;
    let event = |seq: u64, (kind, data): (EventKind, String), at_ms: u64, attempt: u32| Event {
        job: id.to_owned(),
        seq,
        kind,
        data,
        at_ms,
        attempt,
    };
    insert_event(c, event(1, payload::created(), job.now_ms, 0), events)?;
    insert_event(c, event(2, payload::started(attempt, &run.owner), run.started_ms, attempt), events)?;
    let mut seq = 3;
    for r in &run.cycles {
        for q in &r.questions {
            exec(
                c,
                "INSERT OR IGNORE INTO questions (job, id, prompt, agent, cycle) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, q.id, q.prompt, q.agent, i64::from(r.cycle)],
            )
            .map_err(|e| db(&e))?;
        }
        insert_event(c, event(seq, (EventKind::Cycle, r.trace.clone()), run.now_ms, attempt), events)?;
        seq += 1;
    }
    if let Some(o) = &run.stop {
        insert_event(c, event(seq, payload::stop(o), o.now_ms, attempt), events)?;
    }
    Ok(Admission::Created)
}

/// [`create_run`] as the steps of the run written one by one: admission, claim, start, cycles, stop.
fn create_run_by_steps(
    c: &Connection,
    job: &NewJob,
    run: &NewRun,
    events: &mut Vec<Event>,
) -> Result<Admission, StoreError> {
    let admission = create(c, job, events)?;
    if admission != Admission::Created {
        return Ok(admission);
    }
    let id = job.id.as_str();
    let req = rules::run_claim(job, run);
    match claim(c, &req, Some(&run.lease.token), events)? {
        Some(started) if started.lease == run.lease => {}
        _ => return Err(corrupt(format!("job {id}"), "a job stored with its run could not be claimed by it")),
    }
    if run.stop.is_none() {
        // The lease runs from this write, not from the run's start.
        renew(c, id, &run.lease, run.now_ms.saturating_add(run.lease_ms))?;
    }
    begin(c, id, &run.lease, &run.components)?;
    if !run.cycles.is_empty() {
        record_cycles(c, id, &run.lease, &run.cycles, run.now_ms, events)?;
    }
    match &run.stop {
        None => {}
        Some(o) if o.status == Status::Waiting => {
            park(c, id, &run.lease, &[], o, events)?;
        }
        Some(o) => finish(c, id, &run.lease, o, events)?,
    }
    Ok(Admission::Created)
}

fn begin(c: &Connection, id: &str, lease: &Lease, components: &BTreeMap<String, String>) -> Result<(), StoreError> {
    fence(c, id, lease)?;
    let text = serde_json::to_string(components).map_err(|e| corrupt(format!("job {id}"), e.to_string()))?;
    exec(c, "UPDATE jobs SET components = ?2 WHERE id = ?1", params![id, text]).map_err(|e| db(&e))?;
    Ok(())
}

fn renew(c: &Connection, id: &str, lease: &Lease, until_ms: u64) -> Result<Renewal, StoreError> {
    let held = exec(
        c,
        "UPDATE jobs SET lease_expires_ms = ?3 WHERE id = ?1 AND lease_token = ?2",
        params![id, lease.token, to_i64(until_ms)],
    )
    .map_err(|e| db(&e))?
        == 1;
    let cancel: Option<i64> =
        row(c, "SELECT cancel FROM jobs WHERE id = ?1", [id], |r| r.get(0)).optional().map_err(|e| db(&e))?;
    Ok(Renewal { held, cancel_requested: cancel.is_some_and(|c| c != 0) })
}

/// Record a batch of cycles: the ones after the last recorded, with one read of the job and one update.
fn record_cycles(
    c: &Connection,
    id: &str,
    lease: &Lease,
    cycles: &[CycleRecord],
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    fence(c, id, lease)?;
    let recorded: Option<i64> =
        row(c, "SELECT cycles FROM jobs WHERE id = ?1", [id], |r| r.get(0)).optional().map_err(|e| db(&e))?;
    let Some(recorded) = recorded else {
        return Err(corrupt(format!("job {id}"), "cycle of a job not stored"));
    };
    let fresh: Vec<&CycleRecord> = cycles.iter().filter(|r| i64::from(r.cycle) > recorded).collect();
    let Some(last) = fresh.iter().map(|r| r.cycle).max() else { return Ok(()) };
    exec(c, "UPDATE jobs SET cycles = ?2, updated_ms = ?3 WHERE id = ?1", params![id, i64::from(last), to_i64(now_ms)])
        .map_err(|e| db(&e))?;
    for (seq, r) in (next_seq(c, id)?..).zip(fresh) {
        for q in &r.questions {
            exec(
                c,
                "INSERT OR IGNORE INTO questions (job, id, prompt, agent, cycle) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, q.id, q.prompt, q.agent, i64::from(r.cycle)],
            )
            .map_err(|e| db(&e))?;
        }
        let event = Event {
            job: id.to_owned(),
            seq,
            kind: EventKind::Cycle,
            data: r.trace.clone(),
            at_ms: now_ms,
            attempt: lease.attempt,
        };
        insert_event(c, event, events)?;
    }
    Ok(())
}

/// Store where a run stopped (`waiting` or an end) and end its lease: a stop is not a crash.
fn end_run(c: &Connection, id: &str, o: &Outcome) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE jobs SET status = ?2, cycles = MAX(cycles, ?3), context_hash = ?4, result = ?5, updated_ms = ?6,
             open_runs = 0, lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL
         WHERE id = ?1",
        params![id, o.status.as_str(), i64::from(o.cycles), o.context_hash, o.result, to_i64(o.now_ms)],
    )
    .map_err(|e| db(&e))?;
    Ok(())
}

fn park(
    c: &Connection,
    id: &str,
    lease: &Lease,
    seen: &[String],
    o: &Outcome,
    events: &mut Vec<Event>,
) -> Result<Park, StoreError> {
    fence(c, id, lease)?;
    let mut answers = load_answers(c, id)?;
    answers.retain(|q, _| !seen.contains(q));
    if !answers.is_empty() {
        return Ok(Park::Answers(answers));
    }
    end_run(c, id, o)?;
    push_event(c, id, lease.attempt, payload::stop(o), o.now_ms, events)?;
    Ok(Park::Parked)
}

fn finish(c: &Connection, id: &str, lease: &Lease, o: &Outcome, events: &mut Vec<Event>) -> Result<(), StoreError> {
    if status_of(c, id, None)?.is_some_and(Status::is_terminal) {
        return Ok(());
    }
    fence(c, id, lease)?;
    end_run(c, id, o)?;
    push_event(c, id, lease.attempt, payload::stop(o), o.now_ms, events)
}

fn release(c: &Connection, id: &str, lease: &Lease, now_ms: u64) -> Result<(), StoreError> {
    fence(c, id, lease)?;
    exec(
        c,
        "UPDATE jobs SET status = ?2, open_runs = 0, lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL,
             updated_ms = ?3
         WHERE id = ?1",
        params![id, Status::Queued.as_str(), to_i64(now_ms)],
    )
    .map_err(|e| db(&e))?;
    Ok(())
}

fn answer(
    c: &Connection,
    tenant: &str,
    id: &str,
    question: &str,
    text: &str,
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Result<AnswerOutcome, StoreError> {
    let Some(status) = status_of(c, id, Some(tenant))? else { return Ok(AnswerOutcome::UnknownJob) };
    if status.is_terminal() {
        return Ok(AnswerOutcome::Finished(status));
    }
    let known: Option<Option<String>> = c
        .query_row("SELECT answer FROM questions WHERE job = ?1 AND id = ?2", params![id, question], |r| r.get(0))
        .optional()
        .map_err(|e| db(&e))?;
    match known {
        None => return Ok(AnswerOutcome::UnknownQuestion),
        Some(Some(_)) => return Ok(AnswerOutcome::AlreadyAnswered),
        Some(None) => {}
    }
    exec(c, "UPDATE questions SET answer = ?3 WHERE job = ?1 AND id = ?2", params![id, question, text])
        .map_err(|e| db(&e))?;
    push_event(c, id, 0, payload::answer(question), now_ms, events)?;
    let open: i64 = c
        .query_row("SELECT COUNT(*) FROM questions WHERE job = ?1 AND answer IS NULL", [id], |r| r.get(0))
        .map_err(|e| db(&e))?;
    let resume = rules::resumes_on_answer(status, to_u64(open));
    if resume {
        set_status(c, id, Status::Queued, now_ms)?;
    }
    Ok(AnswerOutcome::Recorded { resume })
}

fn cancel(
    c: &Connection,
    tenant: &str,
    id: &str,
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Result<CancelOutcome, StoreError> {
    let Some(status) = status_of(c, id, Some(tenant))? else { return Ok(CancelOutcome::UnknownJob) };
    if status.is_terminal() {
        return Ok(CancelOutcome::Finished(status));
    }
    exec(c, "UPDATE jobs SET cancel = 1, updated_ms = ?2 WHERE id = ?1", params![id, to_i64(now_ms)])
        .map_err(|e| db(&e))?;
    let requeue = rules::requeues_on_cancel(status);
    if requeue {
        set_status(c, id, Status::Queued, now_ms)?;
    }
    push_event(c, id, 0, payload::cancel_requested(status), now_ms, events)?;
    Ok(CancelOutcome::Requested { status, requeue })
}

const TOOL_COLUMNS: &str =
    "digest, name, tenant, status, verdict, manifest, report, created_ms, updated_ms, accepted_ms";

/// A tool row as stored: status, verdict, manifest and report still text.
struct ToolRow {
    digest: String,
    name: String,
    tenant: String,
    status: String,
    verdict: String,
    manifest: String,
    report: String,
    created_ms: i64,
    updated_ms: i64,
    accepted_ms: Option<i64>,
}

fn tool_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ToolRow> {
    Ok(ToolRow {
        digest: r.get(0)?,
        name: r.get(1)?,
        tenant: r.get(2)?,
        status: r.get(3)?,
        verdict: r.get(4)?,
        manifest: r.get(5)?,
        report: r.get(6)?,
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
        accepted_ms: r.get(9)?,
    })
}

/// Parse the text columns of a tool row (its reviews are loaded apart).
fn tool_record(row: ToolRow) -> Result<ToolRecord, StoreError> {
    let what = format!("tool {}", row.digest);
    let status =
        ToolStatus::parse(&row.status).ok_or_else(|| corrupt(&what, format!("unknown status {:?}", row.status)))?;
    let verdict: Verdict = serde_json::from_value(serde_json::Value::String(row.verdict.clone()))
        .map_err(|_| corrupt(&what, format!("unknown verdict {:?}", row.verdict)))?;
    let manifest: Manifest =
        serde_json::from_str(&row.manifest).map_err(|e| corrupt(&what, format!("manifest: {e}")))?;
    let report: Report = serde_json::from_str(&row.report).map_err(|e| corrupt(&what, format!("report: {e}")))?;
    Ok(ToolRecord {
        digest: row.digest,
        name: row.name,
        tenant: row.tenant,
        status,
        verdict,
        manifest,
        report,
        created_ms: to_u64(row.created_ms),
        updated_ms: to_u64(row.updated_ms),
        accepted_ms: row.accepted_ms.map(to_u64),
        reviews: Vec::new(),
    })
}

fn load_tool(c: &Connection, tenant: &str, digest: &str) -> Result<Option<ToolRecord>, StoreError> {
    let sql = format!("SELECT {TOOL_COLUMNS} FROM tools WHERE tenant = ?1 AND digest = ?2");
    let row = match row(c, &sql, params![tenant, digest], tool_row) {
        Ok(r) => r,
        Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
        Err(e) => return Err(db(&e)),
    };
    let mut record = tool_record(row)?;
    record.reviews = load_reviews(c, tenant, digest)?;
    Ok(Some(record))
}

fn load_reviews(c: &Connection, owner: &str, digest: &str) -> Result<Vec<ReviewRecord>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT decision, reviewer, comment, tenant, at_ms FROM tool_reviews WHERE owner = ?1 AND digest = ?2
             ORDER BY seq",
        )
        .map_err(|e| db(&e))?;
    let rows = stmt
        .query_map(params![owner, digest], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, to_u64(r.get(4)?)))
        })
        .map_err(|e| db(&e))?;
    let mut out = Vec::new();
    for row in rows {
        let (decision, reviewer, comment, tenant, at_ms) = row.map_err(|e| db(&e))?;
        let decision = Decision::parse(&decision)
            .ok_or_else(|| corrupt(format!("tool {digest}"), format!("unknown decision {decision:?}")))?;
        out.push(ReviewRecord { decision, reviewer, comment, tenant, at_ms });
    }
    Ok(out)
}

fn put_tool(c: &Connection, t: &NewTool) -> Result<ToolRecord, StoreError> {
    let existing = load_tool(c, &t.tenant, &t.digest)?;
    let outcome = rules::submission(existing.as_ref(), &t.manifest);
    if rules::writes_report(outcome) {
        let now = to_i64(t.now_ms);
        let status = rules::status_of_verdict(t.report.verdict);
        let accepted = (status == ToolStatus::Accepted).then_some(now);
        let manifest =
            serde_json::to_string(&t.manifest).map_err(|e| corrupt(format!("tool {}", t.digest), e.to_string()))?;
        let report =
            serde_json::to_string(&t.report).map_err(|e| corrupt(format!("tool {}", t.digest), e.to_string()))?;
        exec(
            c,
            "INSERT INTO tools (digest, name, tenant, status, verdict, manifest, report, component, created_ms,
                                updated_ms, accepted_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)
             ON CONFLICT (tenant, digest) DO UPDATE SET name = ?2, status = ?4, verdict = ?5, manifest = ?6,
                 report = ?7, component = ?8, updated_ms = ?9, accepted_ms = ?10",
            params![
                t.digest,
                t.name,
                t.tenant,
                status.as_str(),
                t.report.verdict.as_str(),
                manifest,
                report,
                t.component,
                now,
                accepted
            ],
        )
        .map_err(|e| db(&e))?;
    }
    let record = load_tool(c, &t.tenant, &t.digest)?
        .ok_or_else(|| corrupt(format!("tool {}", t.digest), "vanished while being stored"))?;
    // Every submission is in the tool's history, whatever it changed.
    let entry = ToolHistory::Submitted {
        name: t.name.clone(),
        verdict: t.report.verdict,
        reasons: t.report.reasons.clone(),
        manifest_sha256: rules::manifest_sha256(&t.manifest),
        outcome,
        status: record.status,
    };
    push_tool_event(c, &t.tenant, &t.digest, &entry, t.now_ms)?;
    Ok(record)
}

/// Append to a tool's history.
fn push_tool_event(
    c: &Connection,
    tenant: &str,
    digest: &str,
    entry: &ToolHistory,
    at_ms: u64,
) -> Result<(), StoreError> {
    let (kind, data) = match serde_json::to_value(entry) {
        Ok(serde_json::Value::Object(mut o)) => (o.remove("kind"), o.remove("data")),
        _ => (None, None),
    };
    let (Some(serde_json::Value::String(kind)), Some(data)) = (kind, data) else {
        return Err(corrupt(format!("tool {digest}"), "a history entry did not serialize"));
    };
    exec(
        c,
        "INSERT INTO tool_events (tenant, digest, seq, kind, data, at_ms)
         VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tool_events WHERE tenant = ?1 AND digest = ?2),
                 ?3, ?4, ?5)",
        params![tenant, digest, kind, data.to_string(), to_i64(at_ms)],
    )
    .map(drop)
    .map_err(|e| db(&e))
}

fn review_tool(c: &Connection, owner: &str, digest: &str, r: &ReviewRecord) -> Result<ReviewOutcome, StoreError> {
    let Some(tool) = load_tool(c, owner, digest)? else { return Ok(ReviewOutcome::UnknownTool) };
    let Some(status) = rules::review(tool.status, r.decision) else {
        return Ok(ReviewOutcome::NotPending(tool.status));
    };
    let seq = i64::try_from(tool.reviews.len()).unwrap_or(i64::MAX);
    let at = to_i64(r.at_ms);
    exec(
        c,
        "INSERT INTO tool_reviews (owner, digest, seq, decision, reviewer, comment, tenant, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![owner, digest, seq, r.decision.as_str(), r.reviewer, r.comment, r.tenant, at],
    )
    .map_err(|e| db(&e))?;
    let accepted = match status {
        ToolStatus::Accepted => Some(at),
        ToolStatus::Revoked => tool.accepted_ms.map(to_i64),
        ToolStatus::NeedsReview | ToolStatus::Rejected => None,
    };
    exec(
        c,
        "UPDATE tools SET status = ?3, updated_ms = ?4, accepted_ms = ?5,
             component = CASE WHEN ?6 THEN component ELSE NULL END
         WHERE tenant = ?1 AND digest = ?2",
        params![owner, digest, status.as_str(), at, accepted, rules::keeps_component(status)],
    )
    .map_err(|e| db(&e))?;
    let tool = load_tool(c, owner, digest)?.ok_or_else(|| corrupt(format!("tool {digest}"), "vanished"))?;
    let entry = ToolHistory::Reviewed {
        decision: r.decision,
        reviewer: r.reviewer.clone(),
        comment: r.comment.clone(),
        status: tool.status,
    };
    push_tool_event(c, owner, digest, &entry, r.at_ms)?;
    Ok(ReviewOutcome::Recorded(Box::new(tool)))
}

impl Store for SqliteStore {
    fn close(&self) {
        SqliteStore::close(self);
    }

    fn create_job(&self, job: NewJob) -> Reply<Admission> {
        self.send(move |c, ev| create(c, &job, ev))
    }

    fn create_run(&self, job: NewJob, run: NewRun) -> Reply<Admission> {
        self.send(move |c, ev| create_run(c, &job, &run, ev))
    }

    fn claim(&self, request: ClaimRequest) -> Reply<Option<Started>> {
        self.send(move |c, ev| claim(c, &request, None, ev))
    }

    fn begin(&self, id: &str, lease: &Lease, components: BTreeMap<String, String>, _now_ms: u64) -> Reply<()> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(move |c, _| begin(c, &id, &lease, &components))
    }

    fn renew(&self, id: &str, lease: &Lease, lease_ms: u64, now_ms: u64) -> Reply<Renewal> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(move |c, _| renew(c, &id, &lease, now_ms.saturating_add(lease_ms)))
    }

    fn cycles(&self, id: &str, lease: &Lease, cycles: Vec<CycleRecord>, now_ms: u64) -> Reply<()> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(move |c, ev| record_cycles(c, &id, &lease, &cycles, now_ms, ev))
    }

    fn park(&self, id: &str, lease: &Lease, seen: Vec<String>, outcome: Outcome) -> Reply<Park> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(move |c, ev| park(c, &id, &lease, &seen, &outcome, ev))
    }

    fn finish(&self, id: &str, lease: &Lease, outcome: Outcome) -> Reply<()> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(move |c, ev| finish(c, &id, &lease, &outcome, ev))
    }

    fn release(&self, id: &str, lease: &Lease, now_ms: u64) -> Reply<()> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(move |c, _| release(c, &id, &lease, now_ms))
    }

    fn answer(&self, tenant: &str, id: &str, question: &str, answer: &str, now_ms: u64) -> Reply<AnswerOutcome> {
        let (tenant, id, question, text) = (tenant.to_owned(), id.to_owned(), question.to_owned(), answer.to_owned());
        self.send(move |c, ev| self::answer(c, &tenant, &id, &question, &text, now_ms, ev))
    }

    fn cancel(&self, tenant: &str, id: &str, now_ms: u64) -> Reply<CancelOutcome> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.send(move |c, ev| self::cancel(c, &tenant, &id, now_ms, ev))
    }

    fn job(&self, tenant: Option<&str>, id: &str) -> Result<Option<JobRecord>, StoreError> {
        self.read(|c| load_job(c, tenant, id))
    }

    fn list(&self, tenant: Option<&str>, f: &ListFilter) -> Result<Vec<JobSummary>, StoreError> {
        self.read(|c| {
            let mut sql = String::from(
                "SELECT j.id, j.status, j.goal, j.labels, j.cycles, j.context_hash, j.created_ms, j.updated_ms, j.seq
                 FROM jobs j WHERE j.seq < ?1",
            );
            if tenant.is_some() {
                sql.push_str(" AND j.tenant = ?2");
            }
            if f.status.is_some() {
                sql.push_str(" AND j.status = ?3");
            }
            if f.label.is_some() {
                sql.push_str(" AND EXISTS (SELECT 1 FROM labels l WHERE l.job = j.id AND l.key = ?4 AND l.value = ?5)");
            }
            sql.push_str(" ORDER BY j.seq DESC LIMIT ?6");
            let mut stmt = c.prepare_cached(&sql).map_err(|e| db(&e))?;
            let (lk, lv) = f.label.clone().unwrap_or_default();
            let rows = stmt
                .query_map(
                    params![
                        f.before.unwrap_or(i64::MAX),
                        tenant.unwrap_or_default(),
                        f.status.map(Status::as_str).unwrap_or_default(),
                        lk,
                        lv,
                        i64::from(f.limit)
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, i64>(7)?,
                            r.get::<_, i64>(8)?,
                        ))
                    },
                )
                .map_err(|e| db(&e))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, status, goal, labels, cycles, context_hash, created, updated, seq) =
                    row.map_err(|e| db(&e))?;
                out.push(JobSummary {
                    status: status_from(&id, &status)?,
                    labels: serde_json::from_str(&labels)
                        .map_err(|e| corrupt(format!("job {id}"), format!("labels: {e}")))?,
                    id,
                    goal,
                    cycles: u32::try_from(cycles).unwrap_or(0),
                    context_hash,
                    created_ms: to_u64(created),
                    updated_ms: to_u64(updated),
                    seq,
                });
            }
            Ok(out)
        })
    }

    fn answers(&self, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.read(|c| load_answers(c, id))
    }

    fn events(&self, id: &str, after: u64) -> Result<Vec<Event>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, kind, data, at_ms, attempt FROM events WHERE job = ?1 AND seq > ?2 ORDER BY seq",
                )
                .map_err(|e| db(&e))?;
            let rows = stmt
                .query_map(params![id, to_i64(after)], |r| {
                    Ok((to_u64(r.get(0)?), r.get::<_, String>(1)?, r.get(2)?, to_u64(r.get(3)?), r.get::<_, u32>(4)?))
                })
                .map_err(|e| db(&e))?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, kind, data, at_ms, attempt) = row.map_err(|e| db(&e))?;
                let kind = EventKind::parse(&kind)
                    .ok_or_else(|| corrupt(format!("job {id}"), format!("unknown event kind {kind:?}")))?;
                out.push(Event { job: id.to_owned(), seq, kind, data, at_ms, attempt });
            }
            Ok(out)
        })
    }

    fn unfinished(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let [a, b] = rules::RESUMED_AT_START.map(Status::as_str);
            let mut stmt =
                c.prepare_cached("SELECT id FROM jobs WHERE status IN (?1, ?2) ORDER BY seq").map_err(|e| db(&e))?;
            let rows = stmt.query_map(params![a, b], |r| r.get(0)).map_err(|e| db(&e))?;
            rows.collect::<Result<Vec<String>, _>>().map_err(|e| db(&e))
        })
    }

    fn counts(&self) -> Result<BTreeMap<Status, u64>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status").map_err(|e| db(&e))?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(|e| db(&e))?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (status, n) = row.map_err(|e| db(&e))?;
                out.insert(status_from("-", &status)?, to_u64(n));
            }
            Ok(out)
        })
    }

    fn queued(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            row(c, "SELECT COUNT(*) FROM jobs WHERE status = ?1", [Status::Queued.as_str()], |r| r.get::<_, i64>(0))
                .map(to_u64)
                .map_err(|e| db(&e))
        })
    }

    fn oldest_queued(&self) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            row(c, "SELECT MIN(created_ms) FROM jobs WHERE status = ?1", [Status::Queued.as_str()], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|v| v.map(to_u64))
            .map_err(|e| db(&e))
        })
    }

    fn put_tool(&self, tool: NewTool) -> Reply<ToolRecord> {
        self.send(move |c, _| put_tool(c, &tool))
    }

    fn review_tool(&self, tenant: &str, digest: &str, review: ReviewRecord) -> Reply<ReviewOutcome> {
        let (tenant, digest) = (tenant.to_owned(), digest.to_owned());
        self.send(move |c, _| review_tool(c, &tenant, &digest, &review))
    }

    fn tools(&self, tenant: Option<&str>) -> Result<Vec<ToolRecord>, StoreError> {
        self.read(|c| {
            let sql = format!("SELECT {TOOL_COLUMNS} FROM tools WHERE ?1 IS NULL OR tenant = ?1 ORDER BY seq");
            let mut stmt = c.prepare_cached(&sql).map_err(|e| db(&e))?;
            let rows = stmt
                .query_map(params![tenant], tool_row)
                .map_err(|e| db(&e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| db(&e))?;
            let mut tools = Vec::with_capacity(rows.len());
            for row in rows {
                let mut t = tool_record(row)?;
                t.reviews = load_reviews(c, &t.tenant, &t.digest)?;
                tools.push(t);
            }
            Ok(tools)
        })
    }

    fn tool(&self, tenant: &str, digest: &str) -> Result<Option<ToolRecord>, StoreError> {
        self.read(|c| load_tool(c, tenant, digest))
    }

    fn tool_history(&self, tenant: &str, digest: &str) -> Result<Vec<ToolEvent>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, kind, data, at_ms FROM tool_events WHERE tenant = ?1 AND digest = ?2 ORDER BY seq",
                )
                .map_err(|e| db(&e))?;
            let rows = stmt
                .query_map(params![tenant, digest], |r| {
                    Ok((to_u64(r.get(0)?), r.get::<_, String>(1)?, r.get::<_, String>(2)?, to_u64(r.get(3)?)))
                })
                .map_err(|e| db(&e))?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, kind, data, at_ms) = row.map_err(|e| db(&e))?;
                let data: serde_json::Value = serde_json::from_str(&data)
                    .map_err(|e| corrupt(format!("tool {digest}"), format!("history {seq}: {e}")))?;
                let entry: ToolHistory = serde_json::from_value(serde_json::json!({"kind": kind, "data": data}))
                    .map_err(|e| corrupt(format!("tool {digest}"), format!("history {seq}: {e}")))?;
                out.push(ToolEvent { seq, entry, at_ms });
            }
            Ok(out)
        })
    }

    fn tool_component(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = "SELECT component FROM tools WHERE tenant = ?1 AND digest = ?2";
        self.read(|c| match row(c, sql, params![tenant, digest], |r| r.get(0)) {
            Ok(bytes) => Ok(bytes),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(db(&e)),
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| row(c, "SELECT 1", [], |r| r.get::<_, i64>(0)).map(drop).map_err(|e| db(&e)))
    }
}
