//! The shared store: PostgreSQL, for any number of `converge serve` replicas on one queue.
//!
//! Writes go to a few writer threads, each with its own connection, committing the writes waiting when its
//! transaction starts in one group: applied straight in the transaction, and, if one of them fails, rolled back
//! and applied again each in a savepoint, so a failed write is undone alone. A write is
//! routed by what it locks (a job, a tool, an idempotency key), so the writes of one job keep their order; in a
//! group they are applied sorted by that key, so two groups — of this process or of another replica — lock rows
//! in the same order and cannot deadlock each other; a write that still meets a deadlock waits for the next
//! group. Reads use a small pool. Every prepared statement is cached per connection.
//!
//! The queue is the `jobs` table: a claim takes the oldest claimable row `FOR UPDATE SKIP LOCKED` into a lease —
//! owner, a fresh random token, an expiry computed by the database's clock — and every write of the run locks
//! the job's row and checks the token first, so a run whose lease was taken over writes nothing. Changes reach
//! every replica through `NOTIFY converge` (events, claimable jobs, cancels, tools), delivered by [`Store::listen`].
//! A job's row counts its events (`last_seq`), so appending an event takes its position from the locked row in
//! the same statement, and the usual cycle record (token check, cycle count, event) is one statement too.
//!
//! Free text that a client or a guest supplies (goals, labels, prompts, answers, reviews) is stored as `BYTEA`:
//! PostgreSQL text cannot hold a NUL character, and such input must not be able to break a write.
//!
//! The schema is created and migrated under a transaction-scoped advisory lock, so replicas starting at once
//! migrate it once.
//!
//! A replica can stop between two statements of a group (`SIGSTOP`, a frozen VM, a long GC pause of the
//! node) while its transaction holds job rows locked; a claim skips locked rows, so those jobs would wait for
//! it forever. Every connection therefore runs with `idle_in_transaction_session_timeout`: the database ends
//! such a session after [`IDLE_IN_TRANSACTION`], its transaction rolls back, its locks go, and the jobs'
//! expired leases can be taken over. A writer whose connection was ended opens a new one and goes on; the
//! writes of the group that was cut off fail, as a stale run's writes must.

use crate::records::{
    Admission, AnswerOutcome, CancelOutcome, ClaimRequest, CycleRecord, Decision, Event, EventKind, JobRecord,
    JobSummary, Lease, ListFilter, NewJob, NewRun, NewTool, Outcome, Park, Renewal, ReviewOutcome, ReviewRecord,
    Started, ToolEvent, ToolHistory, ToolRecord, ToolStatus,
};
use crate::rules::{self, payload};
use crate::tool::{Manifest, Report, Verdict};
use crate::{Notice, OnNotice, Reply, Store, StoreError};
use converge_engine::Status;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement, Transaction};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

/// Most writes in one group.
const MAX_GROUP: usize = 256;
/// Writer threads (and connections) per process.
const WRITERS: usize = 4;
/// Read connections kept open.
const READERS: usize = 16;
/// Times a write that met a deadlock is tried again, in later groups.
const RETRIES: u32 = 5;
/// The schema version this build creates. 2: `jobs.last_seq`, the position of a job's last event. 3:
/// `jobs.traceparent`. 4: `jobs_claimable`, the index a claim walks, and pages
/// half empty for in-place updates.
const SCHEMA_VERSION: i32 = 4;
/// The advisory lock that serialises migrations across replicas.
const MIGRATION_LOCK: i64 = 0x636f_6e76_6572_6765;
/// The notification channel.
const CHANNEL: &str = "converge";
/// How long a session may sit idle inside a transaction before the database ends it. No write of ours waits
/// inside a transaction, so only a stopped or cut-off process ever reaches it.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to reconnect a writer.
const RECONNECT_MAX: Duration = Duration::from_secs(1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq           BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    tenant        TEXT NOT NULL,
    status        TEXT NOT NULL,
    goal          BYTEA NOT NULL,
    spec          TEXT NOT NULL,
    spec_hash     TEXT NOT NULL,
    labels        TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL,
    attempts      INT NOT NULL DEFAULT 0,
    cycles        INT NOT NULL DEFAULT 0,
    cancel        BOOLEAN NOT NULL DEFAULT FALSE,
    components    TEXT,
    context_hash  TEXT,
    result        TEXT,
    lease_owner   TEXT,
    lease_token   TEXT,
    lease_expires TIMESTAMPTZ,
    open_runs     INT NOT NULL DEFAULT 0,
    last_seq      BIGINT NOT NULL DEFAULT 0,
    traceparent   TEXT
);
-- A job's row is updated a dozen times in its life, its indexed columns (status, tenant, seq) only twice. Its
-- big values (the spec, the result, the components) move out of the row from 256 bytes on, so an update copies
-- (and logs) a small row, not the spec; and pages left half empty let most updates write the new version in
-- place (HOT), with no new index entries for a claim to walk past and no dead tuples on other pages.
ALTER TABLE jobs SET (fillfactor = 50, toast_tuple_target = 256);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
-- What a claim walks, oldest first: only the jobs that may be claimable, never the ended ones (every ended job
-- in `jobs_by_status` or the primary key is a row a claim would read and skip).
CREATE INDEX IF NOT EXISTS jobs_claimable ON jobs (seq) WHERE status IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS labels (
    job   TEXT NOT NULL,
    key   BYTEA NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (job, key)
);
CREATE INDEX IF NOT EXISTS labels_by_value ON labels (key, value);
CREATE TABLE IF NOT EXISTS events (
    job     TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,
    at_ms   BIGINT NOT NULL,
    attempt INT NOT NULL DEFAULT 0,
    PRIMARY KEY (job, seq)
);
CREATE TABLE IF NOT EXISTS questions (
    job    TEXT NOT NULL,
    id     TEXT NOT NULL,
    prompt BYTEA NOT NULL,
    agent  TEXT NOT NULL,
    cycle  INT NOT NULL,
    answer BYTEA,
    PRIMARY KEY (job, id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant    TEXT NOT NULL,
    key       TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    job       TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE TABLE IF NOT EXISTS tools (
    seq         BIGSERIAL PRIMARY KEY,
    digest      TEXT NOT NULL,
    name        TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    status      TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    report      TEXT NOT NULL,
    component   BYTEA,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    accepted_ms BIGINT,
    UNIQUE (tenant, digest)
);
CREATE TABLE IF NOT EXISTS tool_reviews (
    owner    TEXT NOT NULL,
    digest   TEXT NOT NULL,
    seq      INT NOT NULL,
    decision TEXT NOT NULL,
    reviewer BYTEA NOT NULL,
    comment  BYTEA NOT NULL,
    tenant   TEXT NOT NULL,
    at_ms    BIGINT NOT NULL,
    PRIMARY KEY (owner, digest, seq)
);
CREATE TABLE IF NOT EXISTS tool_events (
    tenant TEXT NOT NULL,
    digest TEXT NOT NULL,
    seq    INT NOT NULL,
    kind   TEXT NOT NULL,
    data   TEXT NOT NULL,
    at_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant, digest, seq)
);
";

type Tx<T> = tokio::sync::oneshot::Sender<Result<T, StoreError>>;
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

fn db(e: &postgres::Error) -> StoreError {
    // The client's own message of a server error is only "db error": say what the server said.
    let message = match e.as_db_error() {
        Some(d) => format!("{} ({}): {}", d.severity(), d.code().code(), d.message()),
        None => e.to_string(),
    };
    StoreError::Db { context: "postgres".into(), message }
}

/// Whether `e` means the session is gone: the connection closed, or the server ended it (an administrator, a
/// shutdown, the idle-in-transaction timeout, a lost connection).
fn session_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| {
            let code = c.code();
            code.starts_with("08") || code.starts_with("57P") || *c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        })
}

fn corrupt(what: impl Into<String>, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into(), message: message.into() }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| corrupt(what, "text that is not UTF-8"))
}

fn status_from(job: &str, text: &str) -> Result<Status, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| corrupt(format!("job {job}"), format!("unknown status {text:?}")))
}

/// A connection's prepared statements.
#[derive(Default)]
struct Statements(HashMap<&'static str, Statement>);

/// A transaction (or savepoint) and the statement cache of its connection.
struct Db<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    stmts: &'a mut Statements,
    /// Notifications to send when the group commits.
    notices: &'a mut Vec<String>,
    /// This store's name in its doorbells, so its own listener ignores them.
    origin: &'a str,
}

impl Db<'_, '_> {
    fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.0.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).map_err(|e| db_error(&e))?;
        self.stmts.0.insert(sql, s.clone());
        Ok(s)
    }

    fn execute(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let s = self.stmt(sql)?;
        self.tx.execute(&s, params).map_err(|e| db_error(&e))
    }

    fn opt(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        let s = self.stmt(sql)?;
        self.tx.query_opt(&s, params).map_err(|e| db_error(&e))
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let s = self.stmt(sql)?;
        self.tx.query(&s, params).map_err(|e| db_error(&e))
    }

    fn notify(&mut self, notice: &serde_json::Value) {
        self.notices.push(notice.to_string());
    }

    /// Ring the other replicas' doorbell: a job became claimable. This process queued the job's id itself
    /// when it made the write, so its listener ignores the ring (see [`notice`]).
    fn doorbell(&mut self) {
        let ring = serde_json::json!({"t": "claimable", "o": self.origin});
        self.notify(&ring);
    }
}

/// What a write locks: writes of one key go through one writer in order, and a group applies its writes
/// sorted by key, so every group locks rows in one order.
fn key_of(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// A write on its way to a writer.
trait Write: Send {
    /// The key it locks.
    fn key(&self) -> &str;
    /// Apply in a savepoint: `Ok(done)`, or `Err(self)` to be tried again in a later group (it met a deadlock).
    fn apply(self: Box<Self>, db: &mut Db<'_, '_>, events: &mut Vec<Event>) -> Result<Done, Box<dyn Write>>;
    /// Apply straight in the group's transaction, keeping the value for [`Write::finish`]; `false` if it
    /// failed, when the whole group is rolled back and applied again write by write.
    fn attempt(&mut self, db: &mut Db<'_, '_>, events: &mut Vec<Event>) -> bool;
    /// The answer of a write [`Write::attempt`] applied, once its group committed or failed.
    fn finish(self: Box<Self>) -> Done;
    /// Answer without applying.
    fn refuse(self: Box<Self>, e: StoreError);
}

struct Op<T, F> {
    key: String,
    reply: Tx<T>,
    f: F,
    tries: u32,
    value: Option<T>,
}

impl<T, F> Write for Op<T, F>
where
    T: Send + 'static,
    F: Fn(&mut Db<'_, '_>, &mut Vec<Event>) -> Result<T, StoreError> + Send + 'static,
{
    fn key(&self) -> &str {
        &self.key
    }

    fn apply(mut self: Box<Self>, db: &mut Db<'_, '_>, events: &mut Vec<Event>) -> Result<Done, Box<dyn Write>> {
        let (mark, marked) = (events.len(), db.notices.len());
        let out = match db.tx.savepoint("op") {
            Err(e) => Err(db_error(&e)),
            Ok(mut sp) => {
                let mut inner = Db { tx: &mut sp, stmts: &mut *db.stmts, notices: &mut *db.notices, origin: db.origin };
                match (self.f)(&mut inner, events) {
                    Ok(v) => sp.commit().map(|()| v).map_err(|e| db_error(&e)),
                    Err(e) => Err(e),
                }
            }
        };
        if out.is_err() {
            events.truncate(mark);
            db.notices.truncate(marked);
        }
        if let Err(StoreError::Db { message, .. }) = &out
            && message.starts_with(DEADLOCK)
            && self.tries < RETRIES
        {
            self.tries += 1;
            return Err(self);
        }
        let reply = self.reply;
        Ok(Box::new(move |committed| {
            let _ = reply.send(committed.and(out));
        }))
    }

    fn attempt(&mut self, db: &mut Db<'_, '_>, events: &mut Vec<Event>) -> bool {
        match (self.f)(db, events) {
            Ok(v) => {
                self.value = Some(v);
                true
            }
            Err(_) => false,
        }
    }

    fn finish(self: Box<Self>) -> Done {
        let (reply, value) = (self.reply, self.value);
        Box::new(move |committed| {
            let _ = reply.send(committed.and_then(|()| value.ok_or(StoreError::Closed)));
        })
    }

    fn refuse(self: Box<Self>, e: StoreError) {
        let _ = self.reply.send(Err(e));
    }
}

/// How a deadlock's message begins (see [`db_error`]).
const DEADLOCK: &str = "deadlock: ";

fn db_error(e: &postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) {
        return StoreError::Db { context: "postgres".into(), message: format!("{DEADLOCK}{e}") };
    }
    db(e)
}

/// Where a writer thread takes its writes.
type Writer = mpsc::Sender<Box<dyn Write>>;

/// A read connection with its statements.
struct Reader {
    client: Client,
    stmts: Statements,
}

/// PostgreSQL at a `postgres://` URL, shared by every replica that connects to it.
pub struct PostgresStore {
    url: String,
    writers: Mutex<Option<Vec<Writer>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Reader>>,
    stop: Arc<AtomicBool>,
    /// A name for this store, unique among the replicas, carried by its doorbells.
    origin: Arc<str>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn connect(url: &str) -> Result<Client, StoreError> {
    let failed = |e: postgres::Error| StoreError::Db {
        context: format!("connecting to {}", redact(url)),
        message: e.to_string(),
    };
    let mut client = Client::connect(url, NoTls).map_err(failed)?;
    client.batch_execute(&PostgresStore::session_settings()).map_err(failed)?;
    Ok(client)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl PostgresStore {
    /// What every connection of the store sets for its session: the timeout that ends a session a stopped
    /// process left idle inside a transaction (see the module's documentation).
    #[must_use]
    pub fn session_settings() -> String {
        format!("SET idle_in_transaction_session_timeout = {}", IDLE_IN_TRANSACTION.as_millis())
    }

    /// Connect to `url`, create or migrate the schema (once, whatever the number of replicas starting), and
    /// start the writers. The client is synchronous: call this, like every read, off an async runtime's threads
    /// (the service reads on the blocking pool).
    ///
    /// # Errors
    /// The database cannot be reached, or its schema is of a newer version than this build's.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url)?;
        migrate(&mut client)?;
        let stop = Arc::new(AtomicBool::new(false));
        let origin: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let mut senders = Vec::with_capacity(WRITERS);
        let mut threads = Vec::with_capacity(WRITERS);
        let mut first = Some(client);
        for i in 0..WRITERS {
            let client = match first.take() {
                Some(c) => c,
                None => connect(url)?,
            };
            let (tx, rx) = mpsc::channel();
            let (url, origin) = (url.to_owned(), Arc::clone(&origin));
            let thread = std::thread::Builder::new()
                .name(format!("converge-pg-writer-{i}"))
                .spawn(move || writer(&url, &origin, client, &rx))
                .map_err(|e| StoreError::Db { context: "starting a store writer".into(), message: e.to_string() })?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Self {
            url: url.to_owned(),
            writers: Mutex::new(Some(senders)),
            threads: Mutex::new(threads),
            readers: Mutex::new(Vec::new()),
            stop,
            origin,
        })
    }

    /// Stop the writers after the writes already sent, and the listener.
    pub fn close(&self) {
        self.stop.store(true, Ordering::Release);
        if let Ok(mut w) = self.writers.lock() {
            w.take();
        }
        let threads = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
        // Each client owns a runtime, which must not be dropped inside an async context: drop them on a thread.
        let readers = self.readers.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
        if !readers.is_empty() {
            let _ = std::thread::spawn(move || drop(readers)).join();
        }
    }

    fn send<T, F>(&self, key: String, f: F) -> Reply<T>
    where
        T: Send + 'static,
        F: Fn(&mut Db<'_, '_>, &mut Vec<Event>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let op: Box<dyn Write> = Box::new(Op { key, reply, f, tries: 0, value: None });
        let guard = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(writers) if !writers.is_empty() => {
                let n = usize::try_from(h.finish() % writers.len() as u64).unwrap_or(0);
                if let Err(mpsc::SendError(op)) = writers[n].send(op) {
                    op.refuse(StoreError::Closed);
                }
            }
            _ => op.refuse(StoreError::Closed),
        }
        rx
    }

    fn read<T>(&self, f: impl Fn(&mut Reader) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = match self.readers.lock().ok().and_then(|mut r| r.pop()) {
            Some(c) => c,
            None => Reader { client: connect(&self.url)?, stmts: Statements::default() },
        };
        let mut out = f(&mut conn);
        if out.is_err() && (conn.client.is_closed() || conn.client.is_valid(Duration::from_secs(1)).is_err()) {
            // A pooled connection the database ended (a restart, a terminated session): a read changes
            // nothing, so it is tried once more on a new one.
            conn = Reader { client: connect(&self.url)?, stmts: Statements::default() };
            out = f(&mut conn);
        }
        let broken = conn.client.is_closed();
        if !broken
            && let Ok(mut r) = self.readers.lock()
            && r.len() < READERS
        {
            r.push(conn);
        }
        out
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Reader {
    fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.0.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(|e| db(&e))?;
        self.stmts.0.insert(sql, s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let s = self.stmt(sql)?;
        self.client.query(&s, params).map_err(|e| db(&e))
    }

    fn opt(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        let s = self.stmt(sql)?;
        self.client.query_opt(&s, params).map_err(|e| db(&e))
    }
}

/// From version 1: the position of each job's last event moves into its row.
const MIGRATE_1_2: &str = "
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS last_seq BIGINT NOT NULL DEFAULT 0;
UPDATE jobs SET last_seq = COALESCE((SELECT MAX(seq) FROM events e WHERE e.job = jobs.id), 0);
";

/// From version 2: the trace context a job was submitted under.
const MIGRATE_2_3: &str = "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS traceparent TEXT;";

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let failed = |e: postgres::Error| StoreError::Db { context: "migrating the schema".into(), message: e.to_string() };
    let mut tx = client.transaction().map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(failed)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS converge_schema (version INT NOT NULL)").map_err(failed)?;
    let version: Option<i32> =
        tx.query_opt("SELECT version FROM converge_schema", &[]).map_err(failed)?.map(|r| r.get(0));
    match version {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::NewerSchema {
                location: "postgres".into(),
                found: i64::from(v),
                supported: i64::from(SCHEMA_VERSION),
            });
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => {
            tx.batch_execute(SCHEMA).map_err(failed)?;
            if v < 2 {
                tx.batch_execute(MIGRATE_1_2).map_err(failed)?;
            }
            if v < 3 {
                tx.batch_execute(MIGRATE_2_3).map_err(failed)?;
            }
            tx.execute("UPDATE converge_schema SET version = $1", &[&SCHEMA_VERSION]).map_err(failed)?;
        }
        None => {
            tx.batch_execute(SCHEMA).map_err(failed)?;
            tx.execute("INSERT INTO converge_schema (version) VALUES ($1)", &[&SCHEMA_VERSION]).map_err(failed)?;
        }
    }
    tx.commit().map_err(failed)
}

fn writer(url: &str, origin: &str, mut client: Client, rx: &mpsc::Receiver<Box<dyn Write>>) {
    let mut stmts = Statements::default();
    let mut later: Vec<Box<dyn Write>> = Vec::new();
    let mut backoff = Duration::from_millis(10);
    let mut stale = false;
    loop {
        let mut ops = std::mem::take(&mut later);
        if ops.is_empty() {
            match rx.recv() {
                Ok(op) => ops.push(op),
                Err(_) => return,
            }
        }
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        // One lock order for every group, of every replica.
        ops.sort_by(|a, b| a.key().cmp(b.key()));
        if stale || client.is_closed() {
            // The connection is gone (the database restarted, or ended a session this process left idle in a
            // transaction while it was stopped; the group it cut off has failed, as a stale run's writes must):
            // a new connection serves the writes waiting, or they fail while the database cannot be reached.
            match connect(url) {
                Ok(c) => {
                    tracing::warn!("a store writer reconnected to the database");
                    client = c;
                    stmts = Statements::default();
                    stale = false;
                    backoff = Duration::from_millis(10);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a store writer cannot reconnect to the database");
                    for op in ops {
                        op.refuse(e.clone());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    continue;
                }
            }
        }
        let mut tx = match client.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                let closed = session_lost(&e);
                let e = db(&e);
                if closed {
                    // Found closed only now: reconnect and try these writes there.
                    stale = true;
                    later = ops;
                } else {
                    for op in ops {
                        op.refuse(e.clone());
                    }
                }
                continue;
            }
        };
        let mut events = Vec::new();
        let mut notices = Vec::new();
        // First every write straight in the transaction: no savepoint, two round trips fewer per write. If one
        // fails (its error, a lost lease, a deadlock), the group is rolled back whole and applied again below,
        // each write in a savepoint, so a failed write is undone alone.
        let mut bare = true;
        for op in &mut ops {
            let mut db = Db { tx: &mut tx, stmts: &mut stmts, notices: &mut notices, origin };
            if !op.attempt(&mut db, &mut events) {
                bare = false;
                break;
            }
        }
        if bare {
            let committed = commit_group(tx, &mut stmts, &notices, &mut stale);
            for op in ops {
                op.finish()(committed.clone());
            }
            continue;
        }
        if let Err(e) = tx.rollback() {
            stale |= session_lost(&e);
            let e = db(&e);
            for op in ops {
                op.refuse(e.clone());
            }
            continue;
        }
        careful(&mut client, origin, ops, &mut stmts, &mut stale, &mut later);
    }
}

/// Apply a group write by write, each in a savepoint, so a failed write is undone alone; a write that met a
/// deadlock goes to `later`.
fn careful(
    client: &mut Client,
    origin: &str,
    ops: Vec<Box<dyn Write>>,
    stmts: &mut Statements,
    stale: &mut bool,
    later: &mut Vec<Box<dyn Write>>,
) {
    let mut tx = match client.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            *stale |= session_lost(&e);
            let e = db(&e);
            for op in ops {
                op.refuse(e.clone());
            }
            return;
        }
    };
    let (mut events, mut notices) = (Vec::new(), Vec::new());
    let mut done: Vec<Done> = Vec::with_capacity(ops.len());
    for op in ops {
        let mut db = Db { tx: &mut tx, stmts, notices: &mut notices, origin };
        match op.apply(&mut db, &mut events) {
            Ok(d) => done.push(d),
            Err(again) => later.push(again),
        }
    }
    let committed = commit_group(tx, stmts, &notices, stale);
    for d in done {
        d(committed.clone());
    }
}

/// Send the group's notifications (delivered to every listener when, and only if, the group commits) and
/// commit it. A failure that means the session is gone marks the writer `stale`, to reconnect.
fn commit_group(
    mut tx: Transaction<'_>,
    stmts: &mut Statements,
    notices: &[String],
    stale: &mut bool,
) -> Result<(), StoreError> {
    let mut lost = |e: &postgres::Error| {
        *stale |= session_lost(e);
        db(e)
    };
    if !notices.is_empty() {
        let sql = "SELECT pg_notify($1, n) FROM unnest($2::TEXT[]) AS n";
        let notified = match stmts.0.get(sql) {
            Some(s) => tx.execute(s, &[&CHANNEL, &notices]),
            None => tx.prepare(sql).and_then(|s| {
                stmts.0.insert(sql, s.clone());
                tx.execute(&s, &[&CHANNEL, &notices])
            }),
        };
        notified.map_err(|e| lost(&e))?;
    }
    tx.commit().map_err(|e| lost(&e))
}

// ---- writes ----

fn push_event(
    db: &mut Db<'_, '_>,
    job: &str,
    attempt: u32,
    (kind, data): (EventKind, String),
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    insert_event(db, Event { job: job.to_owned(), seq: 0, kind, data, at_ms: now_ms, attempt }, events)
}

/// Append `e` to its job's trail, at the next position (`e.seq` is ignored): the job's row counts its events,
/// so taking the next position locks the row and reads its latest version, and insert and count are one
/// statement.
fn insert_event(db: &mut Db<'_, '_>, mut e: Event, events: &mut Vec<Event>) -> Result<(), StoreError> {
    let row = db.opt(
        "WITH j AS (UPDATE jobs SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq)
         INSERT INTO events (job, seq, kind, data, at_ms, attempt)
         SELECT $1, last_seq, $2, $3, $4, $5 FROM j
         RETURNING seq",
        &[&e.job, &e.kind.as_str(), &e.data, &to_i64(e.at_ms), &to_i32(e.attempt)],
    )?;
    e.seq = row
        .map(|r| to_u64(r.get(0)))
        .ok_or_else(|| corrupt(format!("job {}", e.job), "an event of a job not stored"))?;
    pushed(db, e, events);
    Ok(())
}

/// Tell every replica of an event written in this group, and the caller.
fn pushed(db: &mut Db<'_, '_>, e: Event, events: &mut Vec<Event>) {
    db.notify(&serde_json::json!({"t": "event", "job": e.job, "seq": e.seq, "kind": e.kind, "attempt": e.attempt}));
    events.push(e);
}

/// The event a statement that appends one to the trail wrote (its `RETURNING seq`), told like [`pushed`];
/// `false` when it wrote nothing.
fn pushed_row(
    db: &mut Db<'_, '_>,
    row: Option<Row>,
    (job, attempt): (&str, u32),
    (kind, data): (EventKind, String),
    at_ms: u64,
    events: &mut Vec<Event>,
) -> bool {
    let Some(r) = row else { return false };
    pushed(db, Event { job: job.to_owned(), seq: to_u64(r.get(0)), kind, data, at_ms, attempt }, events);
    true
}

/// Lock the job's row and return its status and tenant.
fn lock_job(db: &mut Db<'_, '_>, job: &str) -> Result<Option<(Status, String)>, StoreError> {
    let row = db.opt("SELECT status, tenant FROM jobs WHERE id = $1 FOR UPDATE", &[&job])?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((status_from(job, r.get(0))?, r.get(1)))),
    }
}

/// Lock the job's row; the run holding `lease` must still own it. Returns the cycles it has recorded.
fn fence(db: &mut Db<'_, '_>, id: &str, lease: &Lease) -> Result<i32, StoreError> {
    let row = db.opt("SELECT lease_token, cycles FROM jobs WHERE id = $1 FOR UPDATE", &[&id])?;
    match row.map(|r| (r.get::<_, Option<String>>(0), r.get::<_, i32>(1))) {
        Some((Some(t), cycles)) if t == lease.token => Ok(cycles),
        _ => Err(StoreError::LeaseLost(id.to_owned())),
    }
}

fn set_status(db: &mut Db<'_, '_>, job: &str, status: Status, now_ms: u64) -> Result<(), StoreError> {
    db.execute(
        "UPDATE jobs SET status = $2, updated_ms = $3 WHERE id = $1",
        &[&job, &status.as_str(), &to_i64(now_ms)],
    )?;
    Ok(())
}

fn create(db: &mut Db<'_, '_>, job: &NewJob, events: &mut Vec<Event>) -> Result<Admission, StoreError> {
    if let Some(key) = &job.idempotency_key {
        let inserted = db.execute(
            "INSERT INTO idempotency (tenant, key, spec_hash, job) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&job.tenant, key, &job.spec_hash, &job.id],
        )?;
        if inserted == 0 {
            let row = db
                .opt("SELECT spec_hash, job FROM idempotency WHERE tenant = $1 AND key = $2", &[&job.tenant, key])?
                .ok_or_else(|| corrupt("idempotency", "a key that conflicts and is not there"))?;
            let (hash, id): (String, String) = (row.get(0), row.get(1));
            if hash != job.spec_hash {
                return Ok(Admission::KeyConflict { id });
            }
            let status = db
                .opt("SELECT status FROM jobs WHERE id = $1", &[&id])?
                .map(|r| status_from(&id, r.get(0)))
                .transpose()?
                .ok_or_else(|| corrupt(format!("job {id}"), "idempotency key of a missing job"))?;
            return Ok(Admission::Existing { id, status });
        }
    }
    let labels = serde_json::to_string(&job.labels).map_err(|e| corrupt(format!("job {}", job.id), e.to_string()))?;
    // The row and its `created` event (the trail's first) in one statement.
    let (kind, data) = payload::created();
    let row = db.opt(
        "WITH j AS (
             INSERT INTO jobs (id, tenant, status, goal, spec, spec_hash, labels, created_ms, updated_ms,
                 traceparent, last_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, 1)
             RETURNING id)
         INSERT INTO events (job, seq, kind, data, at_ms, attempt)
         SELECT id, 1, $10, $11, $8, 0 FROM j
         RETURNING seq",
        &[
            &job.id,
            &job.tenant,
            &Status::Queued.as_str(),
            &job.goal.as_bytes(),
            &job.spec,
            &job.spec_hash,
            &labels,
            &to_i64(job.now_ms),
            &job.traceparent,
            &kind.as_str(),
            &data,
        ],
    )?;
    if !pushed_row(db, row, (&job.id, 0), (kind, data), job.now_ms, events) {
        return Err(corrupt(format!("job {}", job.id), "a job inserted and not there"));
    }
    for (k, v) in &job.labels {
        db.execute(
            "INSERT INTO labels (job, key, value) VALUES ($1, $2, $3)",
            &[&job.id, &k.as_bytes(), &v.as_bytes()],
        )?;
    }
    db.doorbell();
    Ok(Admission::Created)
}

fn job_from(r: &Row) -> Result<JobRecord, StoreError> {
    let id: String = r.get(0);
    let what = format!("job {id}");
    let labels: String = r.get(6);
    let components: Option<String> = r.get(12);
    Ok(JobRecord {
        status: status_from(&id, r.get(3))?,
        seq: r.get(1),
        tenant: r.get(2),
        spec: r.get(4),
        goal: text(r.get(5), &what)?,
        labels: serde_json::from_str(&labels).map_err(|e| corrupt(&what, format!("labels: {e}")))?,
        created_ms: to_u64(r.get(7)),
        updated_ms: to_u64(r.get(8)),
        attempts: to_u32(r.get(9)),
        cycles: to_u32(r.get(10)),
        cancel_requested: r.get(11),
        components: match components {
            Some(c) => serde_json::from_str(&c).map_err(|e| corrupt(&what, format!("components: {e}")))?,
            None => BTreeMap::new(),
        },
        context_hash: r.get(13),
        result: r.get(14),
        traceparent: r.get(15),
        id,
    })
}

macro_rules! job_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, seq, tenant, status, spec, goal, labels, created_ms, updated_ms, attempts, cycles, cancel, \
             components, context_hash, result, traceparent FROM jobs ",
            $tail
        )
    };
}

/// A job's columns (as [`job_from`] reads them), then whether its lease expired and its open runs.
macro_rules! claim_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, seq, tenant, status, spec, goal, labels, created_ms, updated_ms, attempts, cycles, cancel, \
             components, context_hash, result, traceparent, lease_expires IS NULL OR lease_expires < now(), \
             open_runs FROM jobs ",
            $tail
        )
    };
}

fn load_answers_db(db: &mut Db<'_, '_>, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let rows = db.query("SELECT id, answer FROM questions WHERE job = $1 AND answer IS NOT NULL", &[&id])?;
    answers_from(&rows, id)
}

fn answers_from(rows: &[Row], job: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let mut out = BTreeMap::new();
    for r in rows {
        let answer: Vec<u8> = r.get(1);
        out.insert(r.get(0), text(answer, &format!("job {job}"))?);
    }
    Ok(out)
}

/// Claim under a fresh lease, or under `token` (a run that started before its job was stored).
fn claim(
    db: &mut Db<'_, '_>,
    req: &ClaimRequest,
    token: Option<&str>,
    events: &mut Vec<Event>,
) -> Result<Option<Started>, StoreError> {
    loop {
        // The candidate, locked; rows another transaction holds are skipped, never waited for.
        let row = match &req.job {
            Some(id) => db.opt(claim_select!("WHERE id = $1 FOR UPDATE SKIP LOCKED"), &[id])?,
            None => db.opt(
                claim_select!(
                    "WHERE status IN ('queued', 'running')
                         AND (status = 'queued' OR lease_expires IS NULL OR lease_expires < now())
                     ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
                ),
                &[],
            )?,
        };
        let Some(row) = row else { return Ok(None) };
        let (expired, open_runs): (bool, i32) = (row.get(16), row.get(17));
        let record = job_from(&row)?;
        let id = record.id.clone();
        if !rules::claimable(record.status, expired) {
            return Ok(None);
        }
        let open_runs = to_u32(open_runs);
        if rules::attempts_exhausted(open_runs, req.max_attempts) {
            let end = rules::exhausted(&id, open_runs, req.now_ms);
            end_run(db, &id, &end)?;
            push_event(db, &id, 0, payload::stop(&end), req.now_ms, events)?;
            if req.job.is_some() {
                return Ok(None);
            }
            continue;
        }
        let lease = Lease { token: token.map_or_else(rules::new_token, str::to_owned), attempt: record.attempts + 1 };
        // The lease and the `started` event in one statement.
        let (kind, data) = payload::started(lease.attempt, &req.owner);
        let row = db.opt(
            "WITH j AS (
                 UPDATE jobs SET status = 'running', attempts = $2, open_runs = open_runs + 1, lease_owner = $3,
                     lease_token = $4, lease_expires = now() + $5::FLOAT8 * interval '1 millisecond',
                     updated_ms = $6, last_seq = last_seq + 1
                 WHERE id = $1
                 RETURNING last_seq)
             INSERT INTO events (job, seq, kind, data, at_ms, attempt)
             SELECT $1, last_seq, $7, $8, $6, $2 FROM j
             RETURNING seq",
            &[
                &id,
                &to_i32(lease.attempt),
                &req.owner,
                &lease.token,
                &(f64::from(u32::try_from(req.lease_ms).unwrap_or(u32::MAX))),
                &to_i64(req.now_ms),
                &kind.as_str(),
                &data,
            ],
        )?;
        if !pushed_row(db, row, (&id, lease.attempt), (kind, data), req.now_ms, events) {
            return Err(corrupt(format!("job {id}"), "a claimed job's row is gone"));
        }
        let mut record = record;
        record.status = Status::Running;
        record.attempts = lease.attempt;
        let answers = load_answers_db(db, &id)?;
        return Ok(Some(Started { record, answers, lease }));
    }
}

/// A job and a run that started before it was stored, in one write: the same steps as the run written one by
/// one.
fn create_run(
    db: &mut Db<'_, '_>,
    job: &NewJob,
    run: &NewRun,
    events: &mut Vec<Event>,
) -> Result<Admission, StoreError> {
    let admission = create(db, job, events)?;
    if admission != Admission::Created {
        return Ok(admission);
    }
    let id = job.id.as_str();
    let req = rules::run_claim(job, run);
    match claim(db, &req, Some(&run.lease.token), events)? {
        Some(started) if started.lease == run.lease => {}
        _ => return Err(corrupt(format!("job {id}"), "a job stored with its run could not be claimed by it")),
    }
    begin(db, id, &run.lease, &run.components)?;
    if !run.cycles.is_empty() {
        record_cycles(db, id, &run.lease, &run.cycles, run.now_ms, events)?;
    }
    match &run.stop {
        None => {}
        Some(o) if o.status == Status::Waiting => {
            park(db, id, &run.lease, &[], o, events)?;
        }
        Some(o) => finish(db, id, &run.lease, o, events)?,
    }
    Ok(Admission::Created)
}

fn begin(
    db: &mut Db<'_, '_>,
    id: &str,
    lease: &Lease,
    components: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(components).map_err(|e| corrupt(format!("job {id}"), e.to_string()))?;
    // The fence and the write in one statement: no row updated, no lease.
    match db
        .execute("UPDATE jobs SET components = $2 WHERE id = $1 AND lease_token = $3", &[&id, &text, &lease.token])?
    {
        0 => Err(StoreError::LeaseLost(id.to_owned())),
        _ => Ok(()),
    }
}

fn renew(db: &mut Db<'_, '_>, id: &str, lease: &Lease, lease_ms: u64) -> Result<Renewal, StoreError> {
    let row = db.opt(
        "UPDATE jobs SET lease_expires = now() + $3::FLOAT8 * interval '1 millisecond'
         WHERE id = $1 AND lease_token = $2 RETURNING cancel",
        &[&id, &lease.token, &(f64::from(u32::try_from(lease_ms).unwrap_or(u32::MAX)))],
    )?;
    if let Some(r) = row {
        return Ok(Renewal { held: true, cancel_requested: r.get(0) });
    }
    let cancel = db.opt("SELECT cancel FROM jobs WHERE id = $1", &[&id])?.is_some_and(|r| r.get::<_, bool>(0));
    Ok(Renewal { held: false, cancel_requested: cancel })
}

fn record_cycles(
    db: &mut Db<'_, '_>,
    id: &str,
    lease: &Lease,
    cycles: &[CycleRecord],
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    // The common case, consecutive cycles that ask nothing, none recorded yet, in one statement: under the
    // token check, move `cycles` and take the next positions, then insert the events in order.
    let (first, last) = (cycles.first().map(|c| c.cycle), cycles.last().map(|c| c.cycle));
    let consecutive = cycles.windows(2).all(|w| w[0].cycle.checked_add(1) == Some(w[1].cycle));
    if let (Some(first), Some(last)) = (first, last)
        && consecutive
        && cycles.iter().all(|c| c.questions.is_empty())
    {
        let traces: Vec<&str> = cycles.iter().map(|c| c.trace.as_str()).collect();
        let count = i64::try_from(cycles.len()).unwrap_or(i64::MAX);
        let rows = db.query(
            "WITH j AS (
                 UPDATE jobs SET cycles = $2, updated_ms = $3, last_seq = last_seq + $8
                 WHERE id = $1 AND lease_token = $4 AND cycles < $9
                 RETURNING last_seq)
             INSERT INTO events (job, seq, kind, data, at_ms, attempt)
             SELECT $1, j.last_seq - $8 + t.n, $5, t.data, $3, $7
             FROM j, unnest($6::TEXT[]) WITH ORDINALITY AS t(data, n)
             RETURNING seq",
            &[
                &id,
                &to_i32(last),
                &to_i64(now_ms),
                &lease.token,
                &EventKind::Cycle.as_str(),
                &traces,
                &to_i32(lease.attempt),
                &count,
                &to_i32(first),
            ],
        )?;
        if !rows.is_empty() {
            let mut seqs: Vec<u64> = rows.iter().map(|r| to_u64(r.get(0))).collect();
            seqs.sort_unstable();
            for (seq, c) in seqs.into_iter().zip(cycles) {
                let e = Event {
                    job: id.to_owned(),
                    seq,
                    kind: EventKind::Cycle,
                    data: c.trace.clone(),
                    at_ms: now_ms,
                    attempt: lease.attempt,
                };
                pushed(db, e, events);
            }
            return Ok(());
        }
        // Nothing written: the lease is gone, or a cycle was recorded already. The general path tells which.
    }
    let recorded = fence(db, id, lease)?;
    let fresh: Vec<&CycleRecord> = cycles.iter().filter(|r| to_i32(r.cycle) > recorded).collect();
    let Some(last) = fresh.iter().map(|r| r.cycle).max() else { return Ok(()) };
    db.execute("UPDATE jobs SET cycles = $2, updated_ms = $3 WHERE id = $1", &[&id, &to_i32(last), &to_i64(now_ms)])?;
    for r in fresh {
        for q in &r.questions {
            db.execute(
                "INSERT INTO questions (job, id, prompt, agent, cycle) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                &[&id, &q.id, &q.prompt.as_bytes(), &q.agent, &to_i32(r.cycle)],
            )?;
        }
        let event = Event {
            job: id.to_owned(),
            seq: 0,
            kind: EventKind::Cycle,
            data: r.trace.clone(),
            at_ms: now_ms,
            attempt: lease.attempt,
        };
        insert_event(db, event, events)?;
    }
    Ok(())
}

/// Store where a run stopped (`waiting` or an end) and end its lease: a stop is not a crash.
fn end_run(db: &mut Db<'_, '_>, id: &str, o: &Outcome) -> Result<(), StoreError> {
    db.execute(
        "UPDATE jobs SET status = $2, cycles = GREATEST(cycles, $3), context_hash = $4, result = $5, updated_ms = $6,
             open_runs = 0, lease_owner = NULL, lease_token = NULL, lease_expires = NULL
         WHERE id = $1",
        &[&id, &o.status.as_str(), &to_i32(o.cycles), &o.context_hash, &o.result, &to_i64(o.now_ms)],
    )?;
    Ok(())
}

fn park(
    db: &mut Db<'_, '_>,
    id: &str,
    lease: &Lease,
    seen: &[String],
    o: &Outcome,
    events: &mut Vec<Event>,
) -> Result<Park, StoreError> {
    fence(db, id, lease)?;
    let mut answers = load_answers_db(db, id)?;
    answers.retain(|q, _| !seen.contains(q));
    if !answers.is_empty() {
        return Ok(Park::Answers(answers));
    }
    end_run(db, id, o)?;
    push_event(db, id, lease.attempt, payload::stop(o), o.now_ms, events)?;
    Ok(Park::Parked)
}

fn finish(
    db: &mut Db<'_, '_>,
    id: &str,
    lease: &Lease,
    o: &Outcome,
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    // The common case in one statement: the run holds the lease of a job not ended; store the end, end the
    // lease, take the next position and append the stop.
    let (kind, data) = payload::stop(o);
    let row = db.opt(
        "WITH j AS (
             UPDATE jobs SET status = $2, cycles = GREATEST(cycles, $3), context_hash = $4, result = $5,
                 updated_ms = $6, open_runs = 0, lease_owner = NULL, lease_token = NULL, lease_expires = NULL,
                 last_seq = last_seq + 1
             WHERE id = $1 AND lease_token = $7 AND status IN ('queued', 'running', 'waiting')
             RETURNING last_seq)
         INSERT INTO events (job, seq, kind, data, at_ms, attempt)
         SELECT $1, last_seq, $8, $9, $6, $10 FROM j
         RETURNING seq",
        &[
            &id,
            &o.status.as_str(),
            &to_i32(o.cycles),
            &o.context_hash,
            &o.result,
            &to_i64(o.now_ms),
            &lease.token,
            &kind.as_str(),
            &data,
            &to_i32(lease.attempt),
        ],
    )?;
    if pushed_row(db, row, (id, lease.attempt), (kind, data), o.now_ms, events) {
        return Ok(());
    }
    // Nothing written: the job ended already (a repeated end is no error), or the lease is gone.
    if lock_job(db, id)?.is_some_and(|(s, _)| s.is_terminal()) {
        return Ok(());
    }
    fence(db, id, lease)?;
    end_run(db, id, o)?;
    push_event(db, id, lease.attempt, payload::stop(o), o.now_ms, events)
}

fn release(db: &mut Db<'_, '_>, id: &str, lease: &Lease, now_ms: u64) -> Result<(), StoreError> {
    fence(db, id, lease)?;
    db.execute(
        "UPDATE jobs SET status = 'queued', open_runs = 0, lease_owner = NULL, lease_token = NULL,
             lease_expires = NULL, updated_ms = $2
         WHERE id = $1",
        &[&id, &to_i64(now_ms)],
    )?;
    db.doorbell();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn answer(
    db: &mut Db<'_, '_>,
    tenant: &str,
    id: &str,
    question: &str,
    text: &str,
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Result<AnswerOutcome, StoreError> {
    let Some((status, owner)) = lock_job(db, id)? else { return Ok(AnswerOutcome::UnknownJob) };
    if owner != tenant {
        return Ok(AnswerOutcome::UnknownJob);
    }
    if status.is_terminal() {
        return Ok(AnswerOutcome::Finished(status));
    }
    let known = db.opt("SELECT answer IS NOT NULL FROM questions WHERE job = $1 AND id = $2", &[&id, &question])?;
    match known.map(|r| r.get::<_, bool>(0)) {
        None => return Ok(AnswerOutcome::UnknownQuestion),
        Some(true) => return Ok(AnswerOutcome::AlreadyAnswered),
        Some(false) => {}
    }
    db.execute("UPDATE questions SET answer = $3 WHERE job = $1 AND id = $2", &[&id, &question, &text.as_bytes()])?;
    push_event(db, id, 0, payload::answer(question), now_ms, events)?;
    let open: i64 =
        db.opt("SELECT COUNT(*) FROM questions WHERE job = $1 AND answer IS NULL", &[&id])?.map_or(0, |r| r.get(0));
    let resume = rules::resumes_on_answer(status, to_u64(open));
    if resume {
        set_status(db, id, Status::Queued, now_ms)?;
        db.doorbell();
    }
    Ok(AnswerOutcome::Recorded { resume })
}

fn cancel(
    db: &mut Db<'_, '_>,
    tenant: &str,
    id: &str,
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Result<CancelOutcome, StoreError> {
    let Some((status, owner)) = lock_job(db, id)? else { return Ok(CancelOutcome::UnknownJob) };
    if owner != tenant {
        return Ok(CancelOutcome::UnknownJob);
    }
    if status.is_terminal() {
        return Ok(CancelOutcome::Finished(status));
    }
    db.execute("UPDATE jobs SET cancel = TRUE, updated_ms = $2 WHERE id = $1", &[&id, &to_i64(now_ms)])?;
    let requeue = rules::requeues_on_cancel(status);
    if requeue {
        set_status(db, id, Status::Queued, now_ms)?;
        db.doorbell();
    }
    push_event(db, id, 0, payload::cancel_requested(status), now_ms, events)?;
    db.notify(&serde_json::json!({"t": "cancel", "job": id}));
    Ok(CancelOutcome::Requested { status, requeue })
}

macro_rules! tool_select {
    ($tail:literal) => {
        concat!(
            "SELECT digest, name, tenant, status, verdict, manifest, report, created_ms, updated_ms, accepted_ms \
             FROM tools ",
            $tail
        )
    };
}

fn tool_from(r: &Row) -> Result<ToolRecord, StoreError> {
    let digest: String = r.get(0);
    let what = format!("tool {digest}");
    let status: String = r.get(3);
    let verdict: String = r.get(4);
    let manifest: String = r.get(5);
    let report: String = r.get(6);
    Ok(ToolRecord {
        name: r.get(1),
        tenant: r.get(2),
        status: ToolStatus::parse(&status).ok_or_else(|| corrupt(&what, format!("unknown status {status:?}")))?,
        verdict: serde_json::from_value::<Verdict>(serde_json::Value::String(verdict.clone()))
            .map_err(|_| corrupt(&what, format!("unknown verdict {verdict:?}")))?,
        manifest: serde_json::from_str::<Manifest>(&manifest).map_err(|e| corrupt(&what, format!("manifest: {e}")))?,
        report: serde_json::from_str::<Report>(&report).map_err(|e| corrupt(&what, format!("report: {e}")))?,
        created_ms: to_u64(r.get(7)),
        updated_ms: to_u64(r.get(8)),
        accepted_ms: r.get::<_, Option<i64>>(9).map(to_u64),
        reviews: Vec::new(),
        digest,
    })
}

fn reviews_from(rows: &[Row], digest: &str) -> Result<Vec<ReviewRecord>, StoreError> {
    let what = format!("tool {digest}");
    rows.iter()
        .map(|r| {
            let decision: String = r.get(0);
            Ok(ReviewRecord {
                decision: Decision::parse(&decision)
                    .ok_or_else(|| corrupt(&what, format!("unknown decision {decision:?}")))?,
                reviewer: text(r.get(1), &what)?,
                comment: text(r.get(2), &what)?,
                tenant: r.get(3),
                at_ms: to_u64(r.get(4)),
            })
        })
        .collect()
}

const REVIEWS: &str =
    "SELECT decision, reviewer, comment, tenant, at_ms FROM tool_reviews WHERE owner = $1 AND digest = $2 ORDER BY seq";

fn load_tool_db(db: &mut Db<'_, '_>, tenant: &str, digest: &str) -> Result<Option<ToolRecord>, StoreError> {
    let Some(row) = db.opt(tool_select!("WHERE tenant = $1 AND digest = $2 FOR UPDATE"), &[&tenant, &digest])? else {
        return Ok(None);
    };
    let mut record = tool_from(&row)?;
    record.reviews = reviews_from(&db.query(REVIEWS, &[&tenant, &digest])?, digest)?;
    Ok(Some(record))
}

fn push_tool_event(
    db: &mut Db<'_, '_>,
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
    db.execute(
        "INSERT INTO tool_events (tenant, digest, seq, kind, data, at_ms)
         VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tool_events WHERE tenant = $1 AND digest = $2),
                 $3, $4, $5)",
        &[&tenant, &digest, &kind, &data.to_string(), &to_i64(at_ms)],
    )?;
    db.notify(&serde_json::json!({"t": "tool", "tenant": tenant, "digest": digest}));
    Ok(())
}

fn put_tool(db: &mut Db<'_, '_>, t: &NewTool) -> Result<ToolRecord, StoreError> {
    let existing = load_tool_db(db, &t.tenant, &t.digest)?;
    let outcome = rules::submission(existing.as_ref(), &t.manifest);
    if rules::writes_report(outcome) {
        let now = to_i64(t.now_ms);
        let status = rules::status_of_verdict(t.report.verdict);
        let accepted = (status == ToolStatus::Accepted).then_some(now);
        let what = || format!("tool {}", t.digest);
        let manifest = serde_json::to_string(&t.manifest).map_err(|e| corrupt(what(), e.to_string()))?;
        let report = serde_json::to_string(&t.report).map_err(|e| corrupt(what(), e.to_string()))?;
        db.execute(
            "INSERT INTO tools (digest, name, tenant, status, verdict, manifest, report, component, created_ms,
                                updated_ms, accepted_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)
             ON CONFLICT (tenant, digest) DO UPDATE SET name = $2, status = $4, verdict = $5, manifest = $6,
                 report = $7, component = $8, updated_ms = $9, accepted_ms = $10",
            &[
                &t.digest,
                &t.name,
                &t.tenant,
                &status.as_str(),
                &t.report.verdict.as_str(),
                &manifest,
                &report,
                &t.component,
                &now,
                &accepted,
            ],
        )?;
    }
    let record =
        load_tool_db(db, &t.tenant, &t.digest)?.ok_or_else(|| corrupt(format!("tool {}", t.digest), "vanished"))?;
    let entry = ToolHistory::Submitted {
        name: t.name.clone(),
        verdict: t.report.verdict,
        reasons: t.report.reasons.clone(),
        manifest_sha256: rules::manifest_sha256(&t.manifest),
        outcome,
        status: record.status,
    };
    push_tool_event(db, &t.tenant, &t.digest, &entry, t.now_ms)?;
    Ok(record)
}

fn review_tool(db: &mut Db<'_, '_>, owner: &str, digest: &str, r: &ReviewRecord) -> Result<ReviewOutcome, StoreError> {
    let Some(tool) = load_tool_db(db, owner, digest)? else { return Ok(ReviewOutcome::UnknownTool) };
    let Some(status) = rules::review(tool.status, r.decision) else {
        return Ok(ReviewOutcome::NotPending(tool.status));
    };
    let seq = i32::try_from(tool.reviews.len()).unwrap_or(i32::MAX);
    let at = to_i64(r.at_ms);
    db.execute(
        "INSERT INTO tool_reviews (owner, digest, seq, decision, reviewer, comment, tenant, at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&owner, &digest, &seq, &r.decision.as_str(), &r.reviewer.as_bytes(), &r.comment.as_bytes(), &r.tenant, &at],
    )?;
    let accepted = match status {
        ToolStatus::Accepted => Some(at),
        ToolStatus::Revoked => tool.accepted_ms.map(to_i64),
        ToolStatus::NeedsReview | ToolStatus::Rejected => None,
    };
    db.execute(
        "UPDATE tools SET status = $3, updated_ms = $4, accepted_ms = $5,
             component = CASE WHEN $6 THEN component ELSE NULL END
         WHERE tenant = $1 AND digest = $2",
        &[&owner, &digest, &status.as_str(), &at, &accepted, &rules::keeps_component(status)],
    )?;
    let tool = load_tool_db(db, owner, digest)?.ok_or_else(|| corrupt(format!("tool {digest}"), "vanished"))?;
    let entry = ToolHistory::Reviewed {
        decision: r.decision,
        reviewer: r.reviewer.clone(),
        comment: r.comment.clone(),
        status: tool.status,
    };
    push_tool_event(db, owner, digest, &entry, r.at_ms)?;
    Ok(ReviewOutcome::Recorded(Box::new(tool)))
}

// ---- the listener ----

/// A connection that listens on the channel.
fn subscribe(url: &str) -> Result<Client, StoreError> {
    let mut client = connect(url)?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(|e| StoreError::Db { context: "LISTEN".into(), message: e.to_string() })?;
    Ok(client)
}

/// Deliver every notification on the channel to `on` (starting with `first`, already listening), reconnecting
/// when the connection drops, until `stop`.
fn listen(url: &str, origin: &str, stop: &AtomicBool, on: &OnNotice, first: Option<Client>) {
    let mut first = first;
    while !stop.load(Ordering::Acquire) {
        let mut client = match first.take().map_or_else(|| subscribe(url), Ok) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the notification listener cannot connect; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // Whatever was missed while the listener was away is found by the workers' polling and by followers
        // reading the trail; from here on, notices arrive as they commit.
        on(&Notice::Claimable);
        while !stop.load(Ordering::Acquire) {
            let next = {
                let mut notifications = client.notifications();
                let mut iter = notifications.timeout_iter(Duration::from_millis(250));
                postgres::fallible_iterator::FallibleIterator::next(&mut iter)
                    .transpose()
                    .map(|r| r.map(|n| n.payload().to_owned()))
            };
            match next {
                Some(Ok(payload)) => {
                    if let Some(notice) = notice(&payload, origin) {
                        on(&notice);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the notification listener lost its connection; reconnecting");
                    break;
                }
                None => {
                    if client.is_closed() {
                        break;
                    }
                }
            }
        }
    }
}

/// A notification's payload as a notice; `None` for one this process need not hear, as a doorbell it rang
/// itself (`origin`): it queued those jobs' ids already, and claims them by id without scanning the queue.
fn notice(payload: &str, origin: &str) -> Option<Notice> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    match v.get("t")?.as_str()? {
        "event" => Some(Notice::Event(Event {
            job: s("job")?,
            seq: v.get("seq")?.as_u64()?,
            kind: EventKind::parse(v.get("kind")?.as_str()?)?,
            data: String::new(),
            at_ms: 0,
            attempt: u32::try_from(v.get("attempt")?.as_u64()?).ok()?,
        })),
        "claimable" if s("o").as_deref() == Some(origin) => None,
        "claimable" => Some(Notice::Claimable),
        "cancel" => Some(Notice::Cancel(s("job")?)),
        "tool" => Some(Notice::Tool { tenant: s("tenant")?, digest: s("digest")? }),
        _ => None,
    }
}

impl Store for PostgresStore {
    fn close(&self) {
        PostgresStore::close(self);
    }

    fn shared(&self) -> bool {
        true
    }

    fn listen(&self, on: OnNotice) {
        // Listening before this returns: nothing committed after it is missed.
        let first = match subscribe(&self.url) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "the notification listener cannot connect yet; it retries");
                None
            }
        };
        let (url, stop, origin) = (self.url.clone(), Arc::clone(&self.stop), Arc::clone(&self.origin));
        let spawned = std::thread::Builder::new()
            .name("converge-pg-listen".into())
            .spawn(move || listen(&url, &origin, &stop, &on, first));
        match spawned {
            Ok(t) => {
                if let Ok(mut threads) = self.threads.lock() {
                    threads.push(t);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot start the notification listener; polling only"),
        }
    }

    fn create_job(&self, job: NewJob) -> Reply<Admission> {
        let key = match &job.idempotency_key {
            Some(k) => key_of("key", &format!("{}:{k}", job.tenant)),
            None => key_of("job", &job.id),
        };
        self.send(key, move |db, ev| create(db, &job, ev))
    }

    fn create_run(&self, job: NewJob, run: NewRun) -> Reply<Admission> {
        // Keyed as the job's later writes are, so they are applied after it.
        self.send(key_of("job", &job.id), move |db, ev| create_run(db, &job, &run, ev))
    }

    fn claim(&self, request: ClaimRequest) -> Reply<Option<Started>> {
        let key = request.job.as_deref().map_or_else(|| key_of("claim", ""), |id| key_of("job", id));
        self.send(key, move |db, ev| claim(db, &request, None, ev))
    }

    fn begin(&self, id: &str, lease: &Lease, components: BTreeMap<String, String>, _now_ms: u64) -> Reply<()> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(key_of("job", &id), move |db, _| begin(db, &id, &lease, &components))
    }

    fn renew(&self, id: &str, lease: &Lease, lease_ms: u64, _now_ms: u64) -> Reply<Renewal> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(key_of("job", &id), move |db, _| renew(db, &id, &lease, lease_ms))
    }

    fn cycles(&self, id: &str, lease: &Lease, cycles: Vec<CycleRecord>, now_ms: u64) -> Reply<()> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(key_of("job", &id), move |db, ev| record_cycles(db, &id, &lease, &cycles, now_ms, ev))
    }

    fn park(&self, id: &str, lease: &Lease, seen: Vec<String>, outcome: Outcome) -> Reply<Park> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(key_of("job", &id), move |db, ev| park(db, &id, &lease, &seen, &outcome, ev))
    }

    fn finish(&self, id: &str, lease: &Lease, outcome: Outcome) -> Reply<()> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(key_of("job", &id), move |db, ev| finish(db, &id, &lease, &outcome, ev))
    }

    fn release(&self, id: &str, lease: &Lease, now_ms: u64) -> Reply<()> {
        let (id, lease) = (id.to_owned(), lease.clone());
        self.send(key_of("job", &id), move |db, _| release(db, &id, &lease, now_ms))
    }

    fn answer(&self, tenant: &str, id: &str, question: &str, answer: &str, now_ms: u64) -> Reply<AnswerOutcome> {
        let (tenant, id, question, text) = (tenant.to_owned(), id.to_owned(), question.to_owned(), answer.to_owned());
        self.send(key_of("job", &id), move |db, ev| self::answer(db, &tenant, &id, &question, &text, now_ms, ev))
    }

    fn cancel(&self, tenant: &str, id: &str, now_ms: u64) -> Reply<CancelOutcome> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.send(key_of("job", &id), move |db, ev| self::cancel(db, &tenant, &id, now_ms, ev))
    }

    fn job(&self, tenant: Option<&str>, id: &str) -> Result<Option<JobRecord>, StoreError> {
        self.read(|c| {
            let Some(row) = c.opt(job_select!("WHERE id = $1"), &[&id])? else { return Ok(None) };
            let job = job_from(&row)?;
            Ok(if tenant.is_some_and(|t| t != job.tenant) { None } else { Some(job) })
        })
    }

    fn list(&self, tenant: Option<&str>, f: &ListFilter) -> Result<Vec<JobSummary>, StoreError> {
        let (lk, lv) = f.label.clone().map_or((None, None), |(k, v)| (Some(k.into_bytes()), Some(v.into_bytes())));
        let status = f.status.map(Status::as_str);
        self.read(|c| {
            let rows = c.query(
                "SELECT j.id, j.status, j.goal, j.labels, j.cycles, j.context_hash, j.created_ms, j.updated_ms, j.seq
                 FROM jobs j
                 WHERE j.seq < $1 AND ($2::TEXT IS NULL OR j.tenant = $2) AND ($3::TEXT IS NULL OR j.status = $3)
                   AND ($4::BYTEA IS NULL OR EXISTS (SELECT 1 FROM labels l WHERE l.job = j.id AND l.key = $4
                                                     AND l.value = $5))
                 ORDER BY j.seq DESC LIMIT $6",
                &[&f.before.unwrap_or(i64::MAX), &tenant, &status, &lk, &lv, &i64::from(f.limit)],
            )?;
            rows.iter()
                .map(|r| {
                    let id: String = r.get(0);
                    let what = format!("job {id}");
                    let labels: String = r.get(3);
                    Ok(JobSummary {
                        status: status_from(&id, r.get(1))?,
                        goal: text(r.get(2), &what)?,
                        labels: serde_json::from_str(&labels).map_err(|e| corrupt(&what, format!("labels: {e}")))?,
                        cycles: to_u32(r.get(4)),
                        context_hash: r.get(5),
                        created_ms: to_u64(r.get(6)),
                        updated_ms: to_u64(r.get(7)),
                        seq: r.get(8),
                        id,
                    })
                })
                .collect()
        })
    }

    fn answers(&self, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.read(|c| {
            let rows = c.query("SELECT id, answer FROM questions WHERE job = $1 AND answer IS NOT NULL", &[&id])?;
            answers_from(&rows, id)
        })
    }

    fn events(&self, id: &str, after: u64) -> Result<Vec<Event>, StoreError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT seq, kind, data, at_ms, attempt FROM events WHERE job = $1 AND seq > $2 ORDER BY seq",
                &[&id, &to_i64(after)],
            )?;
            rows.iter()
                .map(|r| {
                    let kind: String = r.get(1);
                    Ok(Event {
                        job: id.to_owned(),
                        seq: to_u64(r.get(0)),
                        kind: EventKind::parse(&kind)
                            .ok_or_else(|| corrupt(format!("job {id}"), format!("unknown event kind {kind:?}")))?,
                        data: r.get(2),
                        at_ms: to_u64(r.get(3)),
                        attempt: to_u32(r.get(4)),
                    })
                })
                .collect()
        })
    }

    fn unfinished(&self) -> Result<Vec<String>, StoreError> {
        // Every replica claims from the table itself; nothing is handed to one process at its start.
        Ok(Vec::new())
    }

    fn queued(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            Ok(c.opt("SELECT COUNT(*) FROM jobs WHERE status = 'queued'", &[])?.map_or(0, |r| to_u64(r.get(0))))
        })
    }

    fn counts(&self) -> Result<BTreeMap<Status, u64>, StoreError> {
        self.read(|c| {
            let rows = c.query("SELECT status, COUNT(*) FROM jobs GROUP BY status", &[])?;
            rows.iter().map(|r| Ok((status_from("-", r.get(0))?, to_u64(r.get(1))))).collect()
        })
    }

    fn oldest_queued(&self) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            Ok(c.opt("SELECT MIN(created_ms) FROM jobs WHERE status = 'queued'", &[])?
                .and_then(|r| r.get::<_, Option<i64>>(0))
                .map(to_u64))
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.opt("SELECT 1", &[]).map(drop))
    }

    fn put_tool(&self, tool: NewTool) -> Reply<ToolRecord> {
        let key = key_of("tool", &format!("{}:{}", tool.tenant, tool.digest));
        self.send(key, move |db, _| put_tool(db, &tool))
    }

    fn review_tool(&self, tenant: &str, digest: &str, review: ReviewRecord) -> Reply<ReviewOutcome> {
        let (tenant, digest) = (tenant.to_owned(), digest.to_owned());
        let key = key_of("tool", &format!("{tenant}:{digest}"));
        self.send(key, move |db, _| review_tool(db, &tenant, &digest, &review))
    }

    fn tools(&self, tenant: Option<&str>) -> Result<Vec<ToolRecord>, StoreError> {
        self.read(|c| {
            let rows = c.query(tool_select!("WHERE $1::TEXT IS NULL OR tenant = $1 ORDER BY seq"), &[&tenant])?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let mut t = tool_from(r)?;
                t.reviews = reviews_from(&c.query(REVIEWS, &[&t.tenant, &t.digest])?, &t.digest)?;
                out.push(t);
            }
            Ok(out)
        })
    }

    fn tool(&self, tenant: &str, digest: &str) -> Result<Option<ToolRecord>, StoreError> {
        self.read(|c| {
            let Some(row) = c.opt(tool_select!("WHERE tenant = $1 AND digest = $2"), &[&tenant, &digest])? else {
                return Ok(None);
            };
            let mut t = tool_from(&row)?;
            t.reviews = reviews_from(&c.query(REVIEWS, &[&tenant, &digest])?, digest)?;
            Ok(Some(t))
        })
    }

    fn tool_history(&self, tenant: &str, digest: &str) -> Result<Vec<ToolEvent>, StoreError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT seq, kind, data, at_ms FROM tool_events WHERE tenant = $1 AND digest = $2 ORDER BY seq",
                &[&tenant, &digest],
            )?;
            rows.iter()
                .map(|r| {
                    let seq = to_u64(i64::from(r.get::<_, i32>(0)));
                    let (kind, data): (String, String) = (r.get(1), r.get(2));
                    let bad = |e: serde_json::Error| corrupt(format!("tool {digest}"), format!("history {seq}: {e}"));
                    let data: serde_json::Value = serde_json::from_str(&data).map_err(bad)?;
                    let entry: ToolHistory =
                        serde_json::from_value(serde_json::json!({"kind": kind, "data": data})).map_err(bad)?;
                    Ok(ToolEvent { seq, entry, at_ms: to_u64(r.get(3)) })
                })
                .collect()
        })
    }

    fn tool_component(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            Ok(c.opt("SELECT component FROM tools WHERE tenant = $1 AND digest = $2", &[&tenant, &digest])?
                .and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
        })
    }
}
