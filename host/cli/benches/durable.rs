//! Durable jobs/s of one `converge serve` on its embedded SQLite store (issue #16 §3), this build against
//! another in the same run, and the latency of both at half the other build's rate.
//!
//! ```text
//! CONVERGE_BENCH_BASELINE=path/to/a/converge[:path/to/another] cargo bench -p converge --bench durable [-- SECONDS CONNECTIONS ROUNDS]
//! ```
//!
//! Each request is `POST /v1/jobs?wait=30` of `examples/market-entry.json` on a new loopback connection: one
//! whole job, committed (`synchronous = FULL`), run and answered. The builds take turns, round after round
//! (ABC, then CBA), each on a fresh data directory, so a machine that slows down for a while slows all; the
//! ratio quoted against each baseline is the median of the rounds' ratios. Then each build gets the same paced
//! load, half the first baseline's median rate (this build's without a baseline), round after round in the same
//! turns, and its p50/p99 from when each job was due. Prints Markdown for BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Load, Replica, cpu_per_job, median, paced, pct, post, replica_of};
use std::path::{Path, PathBuf};

/// A fresh server of `bin`, warmed up by a few jobs (compiled code cached, pages touched).
fn start(bin: &Path, dir: &Path, owner: &str) -> Replica {
    let r = replica_of(bin, dir, None, owner, None);
    let job = job();
    for _ in 0..20 {
        let _ = post(&r.addr, "/v1/jobs?wait=30", &job).unwrap();
    }
    r
}

fn job() -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/market-entry.json")).unwrap()
}

#[allow(clippy::cast_precision_loss)]
fn rate(l: &Load) -> f64 {
    l.jobs as f64 / l.secs
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let conns: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-durable");
    let _ = std::fs::remove_dir_all(&dir);
    converge_tests::example_agents(&dir).unwrap();
    let mut builds = vec![("this build".to_owned(), PathBuf::from(env!("CARGO_BIN_EXE_converge")))];
    for base in std::env::var("CONVERGE_BENCH_BASELINE").unwrap_or_default().split(':').filter(|p| !p.is_empty()) {
        builds.push((format!("baseline `{base}`"), PathBuf::from(base)));
    }
    let job = job();
    eprintln!("durable: {secs} s per run, {conns} connections, {rounds} rounds, {} builds", builds.len());
    // loads[build][round]
    let mut loads: Vec<Vec<Load>> = builds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let order: Vec<usize> =
            if round % 2 == 0 { (0..builds.len()).collect() } else { (0..builds.len()).rev().collect() };
        for b in order {
            let r = start(&builds[b].1, &dir, &format!("b{b}-r{round}"));
            let l = common::load(&[&r], &job, secs, conns);
            eprintln!("  round {round} {}: {:.0} jobs/s", builds[b].0, rate(&l));
            loads[b].push(l);
        }
    }
    let medians: Vec<f64> = loads.iter().map(|ls| median(ls.iter().map(rate).collect())).collect();
    // `CONVERGE_BENCH_RATE` sets the paced rate instead.
    let half = std::env::var("CONVERGE_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| medians.get(1).or(medians.first()).copied().unwrap_or(f64::NAN) / 2.0);
    // halves[build][round], in the same turns.
    let mut halves: Vec<Vec<Load>> = builds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let order: Vec<usize> =
            if round % 2 == 0 { (0..builds.len()).collect() } else { (0..builds.len()).rev().collect() };
        for b in order {
            let r = start(&builds[b].1, &dir, &format!("b{b}-half{round}"));
            let l = paced(&r, &job, secs, half, conns);
            eprintln!("  half load, round {round} {}: p99 {:.1} ms", builds[b].0, pct(&l.latencies, 0.99));
            halves[b].push(l);
        }
    }
    println!(
        "| build | jobs/s (median of {rounds}; each round) | p50 / p99 ms | failed | CPU ms per job (server / load) | \
         at {half:.0} jobs/s: p50 / p99 ms (median; each round), failed |"
    );
    println!("|---|---|---|---|---|---|");
    for (b, (name, _)) in builds.iter().enumerate() {
        let ls = &loads[b];
        let each: Vec<String> = ls.iter().map(|l| format!("{:.0}", rate(l))).collect();
        let p50 = median(ls.iter().map(|l| pct(&l.latencies, 0.5)).collect());
        let p99 = median(ls.iter().map(|l| pct(&l.latencies, 0.99)).collect());
        let failed: usize = ls.iter().map(|l| l.failed).sum();
        let cpu = median(ls.iter().map(|l| cpu_per_job(l)[0]).collect());
        let me = median(ls.iter().map(|l| cpu_per_job(l)[2]).collect());
        let h = &halves[b];
        let h50 = median(h.iter().map(|l| pct(&l.latencies, 0.5)).collect());
        let h99: Vec<f64> = h.iter().map(|l| pct(&l.latencies, 0.99)).collect();
        let h99_each: Vec<String> = h99.iter().map(|p| format!("{p:.1}")).collect();
        let h_failed: usize = h.iter().map(|l| l.failed).sum();
        println!(
            "| {name} | **{:.0}** ({}) | {p50:.1} / {p99:.1} | {failed} | {cpu:.2} / {me:.2} | {h50:.1} / **{:.1}** ({}), {h_failed} |",
            medians[b],
            each.join(", "),
            median(h99),
            h99_each.join(", "),
        );
    }
    for (b, (name, _)) in builds.iter().enumerate().skip(1) {
        let ratios: Vec<f64> = loads[0].iter().zip(&loads[b]).map(|(a, b)| rate(a) / rate(b)).collect();
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "\nthis build / {name}: **{:.2}×** (median of the rounds' ratios: {})",
            median(ratios),
            each.join(", ")
        );
    }
}
