//! What the service benches share: a `converge serve` process of any build, one whole job per request on a new
//! loopback connection, load at the most the server takes or at a set rate, CPU time by process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// A running `converge serve`, stopped (SIGTERM, then waited for) when dropped.
pub struct Replica {
    pub child: Child,
    pub addr: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

pub fn replica(dir: &Path, store: Option<&str>, owner: &str, workers: Option<usize>) -> Replica {
    replica_of(Path::new(env!("CARGO_BIN_EXE_converge")), dir, store, owner, workers)
}

pub fn replica_of(bin: &Path, dir: &Path, store: Option<&str>, owner: &str, workers: Option<usize>) -> Replica {
    let mut cmd = Command::new(bin);
    cmd.arg("serve").args(["--addr", "127.0.0.1:0", "--queue", "100000", "--log-format", "json"]);
    // A build from before replicas (a baseline) has no `--owner`.
    let help = Command::new(bin).args(["serve", "--help"]).output().unwrap();
    if String::from_utf8_lossy(&help.stdout).contains("--owner") {
        cmd.args(["--owner", owner]);
    }
    cmd.arg("--data")
        .arg(dir.join(format!("data-{owner}")))
        .arg("--agents")
        .arg(dir.join("agents"))
        .arg("--cache")
        .arg(dir.join("cache"))
        .env("RUST_LOG", "warn,converge=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = store {
        cmd.args(["--store", url]);
    }
    if let Some(n) = workers {
        cmd.args(["--workers", &n.to_string()]);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_mins(5)).expect("the replica never said it serves");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["message"] == "converge serving"
        {
            break v["addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining its log.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Replica { child, addr }
}

/// One request on a new connection: status and body.
pub fn post(addr: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_mins(1)))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let status = std::str::from_utf8(&out[..out.len().min(12)])
        .ok()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.windows(4).position(|w| w == b"\r\n\r\n").map_or_else(Vec::new, |i| out[i + 4..].to_vec());
    Ok((status, body))
}

/// What a load measured.
pub struct Load {
    pub jobs: usize,
    pub failed: usize,
    pub secs: f64,
    pub latencies: Vec<Duration>,
    /// CPU time spent during the run, in clock ticks: the servers, the database's processes, this load generator.
    pub cpu: [u64; 3],
}

/// CPU time (user + system, clock ticks) of every process whose name is `postgres`, with what their exited
/// children used; of the given server processes; of this process.
pub fn cpu_ticks(servers: &[u32]) -> [u64; 3] {
    let ticks = |stat: &str, children: bool| -> u64 {
        // The fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
        // utime, stime, cutime, cstime are fields 14 to 17; `rest` starts at field 3.
        let own = f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
        if children { own + f.get(13).unwrap_or(&0) + f.get(14).unwrap_or(&0) } else { own }
    };
    let mut db = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            db += ticks(&std::fs::read_to_string(path.join("stat")).unwrap_or_default(), true);
        }
    }
    let server = servers
        .iter()
        .map(|pid| ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(), false))
        .sum();
    let me = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default(), false);
    [server, db, me]
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `conns` clients submitting whole jobs for `secs`, spread over `replicas`.
pub fn load(replicas: &[&Replica], job: &[u8], secs: u64, conns: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let pids: Vec<u32> = replicas.iter().map(|r| r.child.id()).collect();
    let cpu_before = cpu_ticks(&pids);
    let start = Instant::now();
    let threads: Vec<Client> = (0..conns)
        .map(|i| {
            let addr = replicas[i % replicas.len()].addr.clone();
            let job = job.to_vec();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match post(&addr, "/v1/jobs?wait=30", &job) {
                        Ok((200, body)) if body.windows(11).any(|w| w == b"\"converged\"") => ok.push(t.elapsed()),
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    gather(threads, start, &pids, cpu_before)
}

pub fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub fn pct_ms(sorted: &[u64], q: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

/// `conns` clients submitting whole jobs to `replica` at `rate` jobs/s in all for `secs`, on a fixed schedule
/// (job `i` is due at `i / rate` s): each latency counts from when its job was due, so a server that falls
/// behind shows it in the latencies instead of slowing the load down.
pub fn paced(replica: &Replica, job: &[u8], secs: u64, rate: f64, conns: usize) -> Load {
    let pids = [replica.child.id()];
    let cpu_before = cpu_ticks(&pids);
    let start = Instant::now();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let total = (rate * secs as f64) as usize;
    let threads: Vec<Client> = (0..conns)
        .map(|t| {
            let addr = replica.addr.clone();
            let job = job.to_vec();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (Vec::new(), 0);
                for i in (t..total).step_by(conns) {
                    #[allow(clippy::cast_precision_loss)]
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if let Some(d) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    match post(&addr, "/v1/jobs?wait=30", &job) {
                        Ok((200, body)) if body.windows(11).any(|w| w == b"\"converged\"") => ok.push(due.elapsed()),
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    gather(threads, start, &pids, cpu_before)
}

type Client = std::thread::JoinHandle<(Vec<Duration>, usize)>;

/// What the client threads measured since `start`, and the CPU time spent since `cpu_before`.
fn gather(threads: Vec<Client>, start: Instant, pids: &[u32], cpu_before: [u64; 3]) -> Load {
    let mut latencies = Vec::new();
    let mut failed = 0;
    for t in threads {
        let (ok, f) = t.join().unwrap();
        latencies.extend(ok);
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks(pids);
    let cpu = [0, 1, 2].map(|i| cpu_after[i].saturating_sub(cpu_before[i]));
    latencies.sort();
    Load { jobs: latencies.len(), failed, secs, latencies, cpu }
}

/// Median of some numbers (the lower middle one of an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len().saturating_sub(1) / 2).copied().unwrap_or(f64::NAN)
}

/// CPU ms per job of a load: `[servers, database, load generator]`.
pub fn cpu_per_job(l: &Load) -> [f64; 3] {
    #[allow(clippy::cast_precision_loss)]
    l.cpu.map(|t| t as f64 * 1000.0 / clock_ticks() / l.jobs.max(1) as f64)
}
