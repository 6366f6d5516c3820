//! `converge serve` over a real socket: startup and shutdown, refusing to serve the world without tokens, slow
//! clients, crashes (`kill -9`) in the middle of work, and load beyond the queue.

use crate::common::{
    self, MARKET_CYCLES, MARKET_HASH, REVIEW_ANSWER, REVIEW_CYCLES, REVIEW_HASH, REVIEW_QUESTION, example,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a server may take to start, stop, or finish the work a test gave it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(45);

/// A running `converge serve`, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
    /// The `converge serving` log line.
    serving: Value,
    log: Arc<Mutex<Vec<String>>>,
}

/// `converge serve` with the data, agents and cache of `dir`, plus `extra` arguments, and the stderr it wrote.
fn command(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_converge"));
    cmd.arg("serve")
        .args(["--data", dir.join("data").to_str().unwrap()])
        .args(["--agents", dir.join("agents").to_str().unwrap()])
        .args(["--cache", common::cache_dir().to_str().unwrap()])
        .args(["--log-format", "json"])
        .args(extra)
        .env("RUST_LOG", "info,wasmtime=warn,cranelift=warn")
        // Spans go where a test says, never to a collector of the machine's.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Server {
    /// Start on `127.0.0.1:0` and wait for the log line that names the address.
    pub(crate) fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(dir, "127.0.0.1:0", extra)
    }

    pub(crate) fn start_on(dir: &Path, addr: &str, extra: &[&str]) -> Self {
        Self::start_env(dir, addr, extra, &[])
    }

    /// [`Server::start`] with these environment variables set too.
    pub(crate) fn start_with(dir: &Path, extra: &[&str], env: &[(&str, String)]) -> Self {
        Self::start_env(dir, "127.0.0.1:0", extra, env)
    }

    fn start_env(dir: &Path, addr: &str, extra: &[&str], env: &[(&str, String)]) -> Self {
        let mut args = vec!["--addr", addr];
        args.extend_from_slice(extra);
        let mut cmd = command(dir, &args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        // Drain stderr for the server's whole life, so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        // Starting may compile what the shared cache lacks (a tools test's own tools): more patience here.
        let deadline = Instant::now() + PATIENCE * 3;
        let serving: Value = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let status = child.wait();
                panic!("no `converge serving` line ({status:?}); stderr:\n{}", log.lock().unwrap().join("\n"));
            };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "converge serving"
            {
                break v;
            }
        };
        // A wildcard bind is reached through loopback.
        let addr = serving["addr"].as_str().unwrap().replace("0.0.0.0", "127.0.0.1");
        Self { child, addr, serving, log }
    }

    /// Jobs it found queued or running at its start.
    pub(crate) fn resumed(&self) -> u64 {
        self.serving["resumed"].as_u64().unwrap()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Wait for the process to exit.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit; stderr:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` and reap.
    pub(crate) fn crash(mut self) {
        self.signal("-KILL");
        self.wait();
    }

    pub(crate) fn get(&self, path: &str) -> Resp {
        request(&self.addr, "GET", path, &[], None).unwrap()
    }

    pub(crate) fn post(&self, path: &str, body: &str) -> Resp {
        request(&self.addr, "POST", path, &[], Some(body)).unwrap()
    }

    /// Every job, by id (one page: the tests stay under 500 jobs).
    pub(crate) fn jobs(&self) -> BTreeMap<String, Value> {
        let r = self.get("/v1/jobs?limit=500");
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        assert!(page.get("next_cursor").is_none());
        page["jobs"].as_array().unwrap().iter().map(|j| (j["id"].as_str().unwrap().to_owned(), j.clone())).collect()
    }

    /// Poll the listing until every job of `ids` has stopped (ended or waiting for answers); returns them.
    pub(crate) fn settle(&self, ids: &[String]) -> BTreeMap<String, Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let jobs = self.jobs();
            let pending: Vec<&String> = ids
                .iter()
                .filter(|id| jobs.get(*id).is_none_or(|j| matches!(j["status"].as_str(), Some("queued" | "running"))))
                .collect();
            if pending.is_empty() {
                return jobs;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} jobs still unfinished, e.g. {:?}; stderr:\n{}",
                pending.len(),
                ids.len(),
                jobs.get(pending[0]),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A response, read to the end of the connection.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// One HTTP/1.1 request on a fresh connection, `Connection: close`.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(PATIENCE))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        let _ = write!(head, "Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(parse(&raw))
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no head in {raw:?}"));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let rest = &raw[split + 4..];
    let body = if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().unwrap();
        assert_eq!(rest.len(), len, "the body is not Content-Length long");
        rest.to_vec()
    } else {
        rest.to_vec()
    };
    Resp { status, headers, body }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size = std::str::from_utf8(&rest[..eol]).unwrap().split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size, 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n");
        rest = &rest[size + 2..];
    }
}

fn fresh(test: &str) -> PathBuf {
    common::test_dir("serve", test)
}

fn converge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_converge")).args(args).output().unwrap()
}

#[test]
fn serves_a_job_end_to_end_and_stops_on_sigterm() {
    let dir = fresh("end-to-end");
    let mut server = Server::start(&dir, &[]);
    let r = server.post("/v1/jobs?wait=30", &example("market-entry.json"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "converged");
    assert_eq!(v["context_hash"], MARKET_HASH);
    assert_eq!(v["cycles"], MARKET_CYCLES);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), Some(format!("/v1/jobs/{id}").as_str()));

    let health = server.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
    assert_eq!(server.get("/ready").status, 200);
    let missing = server.get("/v1/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["kind"], "not_found");
    // A live event stream over the socket (chunked): an ended job's trail, closed after `end`.
    let events = server.get(&format!("/v1/jobs/{id}/events"));
    assert_eq!(events.status, 200);
    let text = events.text();
    assert!(text.contains("event: cycle"), "{text}");
    assert!(text.trim_end().rsplit("\n\n").next().unwrap().contains("event: end"), "{text}");
    // The job's log lines carry its id.
    assert!(server.log().contains(&id), "{}", server.log());

    server.signal("-TERM");
    let status = server.wait();
    assert!(status.success(), "{status:?}; stderr:\n{}", server.log());
    assert!(server.log().contains("stopped"), "{}", server.log());
}

#[test]
fn refuses_a_public_address_without_tokens() {
    let dir = fresh("refusing");
    let out = command(&dir, &["--addr", "0.0.0.0:0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");
    assert!(!dir.join("data").join("converge.db").exists(), "nothing was created");

    let server = Server::start_on(&dir, "0.0.0.0:0", &["--insecure"]);
    assert_eq!(server.get("/health").status, 200);
    server.crash();

    // With tokens it serves, and asks for them.
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# tenants\nacme tok-acme-0123456789\n").unwrap();
    let server = Server::start_on(&dir, "0.0.0.0:0", &["--token-file", tokens.to_str().unwrap()]);
    let r = server.get("/v1/jobs");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = request(&server.addr, "GET", "/v1/jobs", &[("Authorization", "Bearer tok-acme-0123456789")], None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    server.crash();

    // A bad token file is refused by line.
    std::fs::write(&tokens, "acme short\n").unwrap();
    let out = command(&dir, &["--addr", "127.0.0.1:0", "--token-file", tokens.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
}

/// Read until the server closes the connection; `Err` if it is still open after `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("still open after {limit:?}, having sent {:?}", String::from_utf8_lossy(&got)));
            }
            // Reset by the server: closed.
            Err(_) => return Ok(got),
        }
    }
}

#[test]
fn a_slow_client_is_cut_off_while_others_are_served() {
    let dir = fresh("slowloris");
    let server = Server::start(&dir, &["--header-timeout-ms", "300"]);
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.write_all(b"GET /hea").unwrap();
    let mut slow_head = TcpStream::connect(&server.addr).unwrap();
    slow_head.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    // A kept-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();

    let r = server.get("/health");
    assert_eq!(r.status, 200);

    for (name, conn) in
        [("half a request line", &mut slow), ("half a header", &mut slow_head), ("nothing", &mut silent)]
    {
        let sent = read_until_closed(conn, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sent = String::from_utf8_lossy(&sent);
        assert!(sent.is_empty() || sent.starts_with("HTTP/1.1 408"), "{name}: {sent}");
    }
    let sent = read_until_closed(&mut idle, Duration::from_secs(10)).unwrap_or_else(|e| panic!("idle: {e}"));
    let sent = String::from_utf8_lossy(&sent);
    assert!(sent.starts_with("HTTP/1.1 200") && sent.ends_with(r#"{"status":"ok"}"#), "idle: {sent}");
    // A head over the limit (64 KiB) is refused, however it arrives.
    let big = "x".repeat(100 * 1024);
    match request(&server.addr, "GET", "/health", &[("X-Big", &big)], None) {
        Ok(r) => assert_eq!(r.status, 431, "{:?}", r.headers),
        // The server may close with part of the head unread, and the reset can beat its 431 to us.
        Err(e) => {
            assert!(matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{e}");
        }
    }
    // Still serving.
    assert_eq!(server.get("/health").status, 200);
}

/// Submit `specs` from `threads` threads at once; returns `(index, response)` for each.
fn submit_all(addr: &str, specs: &[String], threads: usize) -> Vec<(usize, Resp)> {
    let barrier = Arc::new(Barrier::new(threads));
    let specs = Arc::new(specs.to_vec());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (barrier, specs, addr) = (Arc::clone(&barrier), Arc::clone(&specs), addr.to_owned());
            std::thread::spawn(move || {
                barrier.wait();
                (t..specs.len())
                    .step_by(threads)
                    .map(|i| {
                        let r = request(&addr, "POST", "/v1/jobs", &[], Some(&specs[i]))
                            .unwrap_or_else(|e| panic!("submission {i}: {e}"));
                        (i, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out: Vec<(usize, Resp)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    out.sort_by_key(|(i, _)| *i);
    out
}

fn accepted_id(r: &Resp) -> String {
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert!(["queued", "running", "waiting", "converged"].contains(&v["status"].as_str().unwrap()), "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn acknowledged_jobs_survive_kill_9_twice() {
    let dir = fresh("crash");
    let market = example("market-entry.json");
    let review = example("review.json");
    let specs: Vec<String> = (0..45).map(|i| if i % 9 == 4 { review.clone() } else { market.clone() }).collect();

    let server = Server::start(&dir, &["--workers", "2"]);
    let responses = submit_all(&server.addr, &specs, 4);
    server.crash();
    let mut market_ids = Vec::new();
    let mut review_ids = Vec::new();
    for (i, r) in &responses {
        let id = accepted_id(r);
        if specs[*i] == review { review_ids.push(id) } else { market_ids.push(id) }
    }
    assert_eq!((market_ids.len(), review_ids.len()), (40, 5));
    let all: Vec<String> = [market_ids.clone(), review_ids.clone()].concat();

    // A second crash, mid-recovery.
    let server = Server::start(&dir, &["--workers", "2"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.resumed() > 0, "the first crash interrupted no job, so it tests nothing");
    server.crash();

    let mut server = Server::start(&dir, &["--workers", "2"]);
    let jobs = server.settle(&all);
    for id in &market_ids {
        let j = &jobs[id];
        assert_eq!(j["status"], "converged", "{j}");
        assert_eq!(j["context_hash"], MARKET_HASH, "{j}");
        assert_eq!(j["cycles"], MARKET_CYCLES, "{j}");
    }
    for id in &review_ids {
        assert_eq!(jobs[id]["status"], "waiting", "{}", jobs[id]);
        let v = server.get(&format!("/v1/jobs/{id}")).json();
        assert_eq!(v["open_questions"][0]["id"], REVIEW_QUESTION, "{v}");
        let answer = json!({"question": REVIEW_QUESTION, "answer": REVIEW_ANSWER}).to_string();
        let r = server.post(&format!("/v1/jobs/{id}/answers"), &answer);
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["resumed"], true);
    }
    let jobs = server.settle(&all);
    for id in &review_ids {
        let j = &jobs[id];
        assert_eq!(j["status"], "converged", "{j}");
        assert_eq!(j["context_hash"], REVIEW_HASH, "{j}");
        assert_eq!(j["cycles"], REVIEW_CYCLES, "{j}");
    }
    assert_eq!(jobs.len(), all.len(), "no job appeared that was not acknowledged");

    // Each job's trail holds every cycle once, in order, and one end.
    for id in &all {
        let trace = server.get(&format!("/v1/jobs/{id}/trace")).json();
        let events = trace["events"].as_array().unwrap();
        let ends = events.iter().filter(|e| e["kind"] == "end").count();
        assert_eq!(ends, 1, "{id}: {ends} end events");
        assert_eq!(events.last().unwrap()["kind"], "end", "{id}");
        let cycles: Vec<u64> =
            events.iter().filter(|e| e["kind"] == "cycle").map(|e| e["data"]["cycle"].as_u64().unwrap()).collect();
        let expected = jobs[id]["cycles"].as_u64().unwrap();
        assert_eq!(cycles, (1..=expected).collect::<Vec<_>>(), "{id}");
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "{id}");
    }

    server.signal("-TERM");
    assert!(server.wait().success(), "{}", server.log());
    let (data, agents, cache) = (dir.join("data"), dir.join("agents"), common::cache_dir());
    for id in [&market_ids[0], &review_ids[0]] {
        let out = converge(&[
            "replay",
            id,
            "--data",
            data.to_str().unwrap(),
            "--agents",
            agents.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "replay {id}: {stderr}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["identical"], true, "{report}");
    }
}

#[test]
fn a_full_queue_sheds_load_with_503_and_keeps_what_it_accepted() {
    let dir = fresh("shed");
    let server = Server::start(&dir, &["--queue", "20", "--workers", "1"]);
    let specs = vec![example("market-entry.json"); 200];
    let responses = submit_all(&server.addr, &specs, 20);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (i, r) in &responses {
        match r.status {
            202 => accepted.push(accepted_id(r)),
            503 => {
                assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()), "{i}: {:?}", r.headers);
                assert_eq!(r.json()["error"]["kind"], "overloaded");
                refused += 1;
            }
            s => panic!("submission {i}: {s} {}", r.text()),
        }
    }
    assert!(refused > 0, "a queue of 20 with one worker took all 200");
    assert!(!accepted.is_empty());
    let jobs = server.settle(&accepted);
    assert_eq!(jobs.len(), accepted.len(), "a refused job was stored");
    for id in &accepted {
        assert_eq!(jobs[id]["status"], "converged", "{}", jobs[id]);
        assert_eq!(jobs[id]["context_hash"], MARKET_HASH);
    }
}

#[test]
fn a_default_queue_accepts_200_concurrent_jobs() {
    let dir = fresh("load");
    let server = Server::start(&dir, &[]);
    let specs = vec![example("market-entry.json"); 200];
    let responses = submit_all(&server.addr, &specs, 20);
    let accepted: Vec<String> = responses.iter().map(|(_, r)| accepted_id(r)).collect();
    let jobs = server.settle(&accepted);
    assert_eq!(jobs.len(), 200);
    for id in &accepted {
        assert_eq!(jobs[id]["status"], "converged", "{}", jobs[id]);
        assert_eq!(jobs[id]["context_hash"], MARKET_HASH);
    }
}
