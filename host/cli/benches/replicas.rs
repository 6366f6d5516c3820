//! Durable jobs/s and latency of the example job on each store, in one run: SQLite, PostgreSQL with one
//! replica, PostgreSQL with two replicas on one database; enqueue-to-start latency of jobs another process
//! commits (the replicas learn of them only through `NOTIFY`); PostgreSQL round trips per job.
//!
//! ```text
//! cargo bench -p converge --bench replicas [-- SECONDS CONNECTIONS [WORKERS]]
//! CONVERGE_BENCH_BASELINE=path/to/another/converge cargo bench -p converge --bench replicas
//! ```
//!
//! With `CONVERGE_BENCH_BASELINE`, the SQLite and one-replica rows are measured again with that build, last,
//! in the same run.
//!
//! Real processes (`converge serve`, release build) and a throwaway PostgreSQL 15 with `fsync` and
//! `synchronous_commit` on (SQLite runs with `synchronous = FULL`): the durability a user runs with. Each
//! request is `POST /v1/jobs?wait=30` of `examples/market-entry.json` on a new loopback connection: one whole
//! job, committed, run and answered. The load generator runs on the same machine and takes its share of the
//! cores. Prints a Markdown table for BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Load, Replica, clock_ticks, load, pct, pct_ms, post, replica, replica_of};
use converge_store::{EventKind, PostgresStore, Store};
use converge_testpg::PgServer;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Statements the database executed (each one round trip: the client does not pipeline) since the last reset.
fn statements(url: &str) -> i64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query_one(
        "SELECT COALESCE(SUM(calls), 0)::BIGINT FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[],
    )
    .unwrap()
    .get(0)
}

/// The statements that cost the database most per job (execution time), with how often each runs, to see where
/// the database's time and the round trips go.
fn top_statements(url: &str, jobs: usize) -> Vec<String> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let rows = c
        .query(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_exec_time DESC LIMIT 14",
            &[],
        )
        .unwrap();
    let hot = c
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd, (SELECT AVG(pg_column_size(j.*))::FLOAT8 FROM jobs j) \
             FROM pg_stat_user_tables WHERE relname = 'jobs'",
            &[],
        )
        .unwrap();
    let (updates, hot_updates, row_bytes): (i64, i64, Option<f64>) = (hot.get(0), hot.get(1), hot.get(2));
    #[allow(clippy::cast_precision_loss)]
    let head = format!(
        "  jobs rows: {:.1} updates per job, {:.0} % of them HOT (in place), {:.0} bytes per row",
        updates as f64 / jobs.max(1) as f64,
        100.0 * hot_updates as f64 / updates.max(1) as f64,
        row_bytes.unwrap_or(0.0)
    );
    let lines = rows.iter().map(|r| {
        let calls: i64 = r.get(0);
        let total_ms: f64 = r.get(1);
        let query: String = r.get(2);
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        #[allow(clippy::cast_precision_loss)]
        let (per, us) = (calls as f64 / jobs.max(1) as f64, total_ms * 1000.0 / jobs.max(1) as f64);
        format!("  {per:6.1}  {us:8.1} µs  {}", query.chars().take(140).collect::<String>())
    });
    std::iter::once(head).chain(lines).collect()
}

fn reset_statements(url: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset(); SELECT pg_stat_reset()",
    )
    .unwrap();
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Jobs committed by this process one at a time, 20 ms apart, while the replicas sit idle: from the commit to
/// the `started` event of the replica that claimed it (both clocks are this machine's), in ms.
fn enqueue_to_start(url: &str, job: &str, n: usize) -> Vec<u64> {
    let store = PostgresStore::connect(url).unwrap();
    let spec: converge_engine::JobSpec = serde_json::from_str(job).unwrap();
    let canonical = serde_json::to_string(&spec).unwrap();
    let hash = converge_engine::hex(&<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()));
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("job_bench_notify_{i:05}");
        let new = converge_store::NewJob {
            id: id.clone(),
            tenant: "default".into(),
            spec: canonical.clone(),
            spec_hash: hash.clone(),
            goal: spec.goal.clone(),
            labels: spec.labels.clone(),
            idempotency_key: None,
            traceparent: None,
            now_ms: now_ms(),
        };
        converge_store::wait(store.create_job(new)).unwrap();
        ids.push(id);
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut out = Vec::new();
    for id in &ids {
        loop {
            let job = store.job(None, id).unwrap().unwrap();
            let started = store.events(id, 0).unwrap().into_iter().find(|e| e.kind == EventKind::Started);
            if let Some(e) = started {
                out.push(e.at_ms.saturating_sub(job.created_ms));
                break;
            }
            assert!(Instant::now() < deadline, "{id} never started");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    store.close();
    out.sort_unstable();
    out
}

/// One measured phase: a job through each replica to warm it, the statement counters reset (`url`, a
/// PostgreSQL store), then the load. Returns the table's row and the load.
fn phase(replicas: &[&Replica], url: Option<&str>, name: &str, job: &[u8], secs: u64, conns: usize) -> (String, Load) {
    for r in replicas {
        let _ = post(&r.addr, "/v1/jobs?wait=30", job).unwrap();
    }
    if let Some(url) = url {
        reset_statements(url);
    }
    let l = load(replicas, job, secs, conns);
    #[allow(clippy::cast_precision_loss)]
    let trips = url.map(|url| statements(url) as f64 / l.jobs.max(1) as f64);
    (row(name, &l, trips), l)
}

fn row(name: &str, l: &Load, trips: Option<f64>) -> String {
    #[allow(clippy::cast_precision_loss)]
    let rate = l.jobs as f64 / l.secs;
    let trips = trips.map_or_else(|| "—".to_owned(), |t| format!("{t:.1}"));
    #[allow(clippy::cast_precision_loss)]
    let per_job = |t: u64| t as f64 * 1000.0 / clock_ticks() / l.jobs.max(1) as f64;
    let [server, db, me] = l.cpu.map(per_job);
    format!(
        "| {name} | {rate:.0} | {:.1} | {:.1} | {} | {trips} | {server:.2} / {db:.2} / {me:.2} |",
        pct(&l.latencies, 0.5),
        pct(&l.latencies, 0.99),
        l.failed
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let conns: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    // Jobs run at once per replica (`--workers`); default: the server's own default, twice the cores.
    let workers: Option<usize> = args.get(2).and_then(|s| s.parse().ok());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-replicas");
    let _ = std::fs::remove_dir_all(&dir);
    converge_tests::example_agents(&dir).unwrap();
    let job_text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/market-entry.json"))
            .unwrap();
    let job = job_text.as_bytes();
    let pg = PgServer::start_with(&[
        "fsync=on",
        "synchronous_commit=on",
        "full_page_writes=on",
        "shared_preload_libraries=pg_stat_statements",
    ])
    .expect("this benchmark needs the PostgreSQL server binaries");
    eprintln!("replicas: {secs} s per run, {conns} connections, {} cores, workers {workers:?}", num_cpus());
    let mut rows = Vec::new();

    {
        let r = replica(&dir, None, "sqlite", workers);
        rows.push(phase(&[&r], None, "SQLite, 1 process", job, secs, conns).0);
    }
    let url1 = pg.database("bench_one");
    let top;
    {
        let r = replica(&dir, Some(&url1), "pg-one", workers);
        let (line, l) = phase(&[&r], Some(&url1), "PostgreSQL, 1 replica", job, secs, conns);
        rows.push(line);
        top = top_statements(&url1, l.jobs);
    }
    let url2 = pg.database("bench_two");
    let notify;
    {
        let a = replica(&dir, Some(&url2), "pg-a", workers);
        let b = replica(&dir, Some(&url2), "pg-b", workers);
        rows.push(phase(&[&a, &b], Some(&url2), "PostgreSQL, 2 replicas", job, secs, conns).0);
        notify = enqueue_to_start(&url2, &job_text, 200);
    }
    // Another build of `converge` (`CONVERGE_BENCH_BASELINE=path`), run the same way in the same run, for a
    // before and after on one machine.
    if let Some(base) = std::env::var_os("CONVERGE_BENCH_BASELINE").map(PathBuf::from) {
        {
            let r = replica_of(&base, &dir, None, "base-sqlite", workers);
            rows.push(phase(&[&r], None, "SQLite, 1 process (baseline build)", job, secs, conns).0);
        }
        let url = pg.database("bench_base");
        let r = replica_of(&base, &dir, Some(&url), "base-pg", workers);
        rows.push(phase(&[&r], Some(&url), "PostgreSQL, 1 replica (baseline build)", job, secs, conns).0);
    }
    println!(
        "| store | jobs/s | p50 ms | p99 ms | failed | statements per job | CPU ms per job: servers / database / load |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\nstatements by database time per job (PostgreSQL, 1 replica): calls per job, execution time per job, statement"
    );
    for t in &top {
        println!("{t}");
    }
    println!(
        "\nenqueue-to-start through NOTIFY (2 idle replicas, {} jobs committed by another process, 20 ms apart): \
         p50 {} ms, p99 {} ms, max {} ms (ms resolution)",
        notify.len(),
        pct_ms(&notify, 0.5),
        pct_ms(&notify, 0.99),
        notify.last().copied().unwrap_or(0)
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
