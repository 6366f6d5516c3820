//! Benchmarks of the sandbox host (issue #3), with the `reader` probe guest and the same logic native.
//!
//! - `call/native` and `call/sandboxed`: one call of the reader logic against a one-fact context; sandboxed is a
//!   fresh store, instantiation from the pre-instance, the call (three host calls) and the drop.
//! - `call/floor`: the same guest and call on wasmtime with nothing but the guest's own imports
//!   (`floor/mod.rs`): how far the sandbox is from wasmtime itself.
//! - `call/sandboxed-lean` and `call/floor-lean`: the same with `reader-lean`, the reader's logic built without
//!   `std` (so it imports no WASI): what a guest's WASI imports cost per fresh call.
//! - `call/sandboxed-full-reset`: the same in a sandbox that resets pooled memory the full way (what it does
//!   when swap is active, SPEC §3), instead of the fast `PAGEMAP_SCAN` reset.
//! - `calls/threads-1` and `calls/threads-2`: 512 sandboxed calls spread over a rayon pool of 1 or 2 threads;
//!   `calls/threads-2-full-reset` with the full reset; `calls/floor-threads-1` and `calls/floor-threads-2` the
//!   floor's calls the same way.
//! - `view/100` and `view/10000`: the same read (`added("in")` returning 100 facts, `count`, `get`, `keys`)
//!   against a context of 100 facts and one of 10,000 (the 9,900 others under 99 other keys).
//! - `startup/50-cached`: a new sandbox and a registry loading 50 distinct agents whose compiled code is cached.
//! - `tool/invoke`: one invocation of the `upper` probe tool in a fresh sandbox, as `tools.invoke` runs it;
//!   `tool/agent-denied` and `tool/agent-invoke`: the `tool-caller` probe agent making one call that is denied
//!   (no sandbox) or that runs `upper` nested in the agent's call.
//!
//! Run with `cargo bench -p converge-tests --bench sandbox`; see BENCHMARKS.md for the numbers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use converge_engine::{Agent, AgentInfo, Effect, Execution, Fact, Job, JobSpec, RayonExecutor, View};
use converge_runtime::{Registry, roster};
use converge_sandbox::{MemoryReset, Sandbox, SandboxConfig};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use converge_tests::GUESTS;

mod floor;

fn guest_bytes(name: &str) -> Vec<u8> {
    let path = GUESTS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).unwrap();
    std::fs::read(path).unwrap()
}

fn reader_bytes() -> Vec<u8> {
    guest_bytes("reader")
}

/// The reader guest's logic, native.
struct NativeReader(AgentInfo);

impl Agent for NativeReader {
    fn info(&self) -> &AgentInfo {
        &self.0
    }

    fn execute(&self, ctx: &View) -> Execution {
        let mut out = Vec::new();
        for f in ctx.added("in") {
            out.push(Fact::new("echo", f.id, format!("{}|count={}", f.content, ctx.count("in"))));
        }
        let keys: Vec<&str> = ctx.keys().collect();
        let got = ctx.get("in", "1").map_or_else(|| "none".to_owned(), |f| f.content.to_owned());
        out.push(Fact::new(
            "echo",
            format!("meta@{}", ctx.cycle()),
            format!("goal={};keys={};get={got}", ctx.goal(), keys.join(",")),
        ));
        Effect { facts: out, ..Effect::default() }.into()
    }
}

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-cache")
}

/// The sandboxed reader and a view of a context with `inputs` facts under `in` and `others` elsewhere.
fn setup(sandbox: &Arc<Sandbox>, inputs: usize, others: usize) -> (Arc<dyn Agent>, View) {
    setup_guest(sandbox, "reader", inputs, others)
}

/// [`setup`] with the guest `name` (the reader or its `std`-less twin).
fn setup_guest(sandbox: &Arc<Sandbox>, name: &str, inputs: usize, others: usize) -> (Arc<dyn Agent>, View) {
    let d = dir(name);
    std::fs::write(d.join(format!("{name}.wasm")), guest_bytes(name)).unwrap();
    let catalog = Registry::new(Arc::clone(sandbox), &d, Some(cache())).refresh().unwrap();
    let mut spec = JobSpec::new("bench");
    spec.facts = (0..inputs).map(|i| Fact::new("in", format!("{i:05}"), "content of a fact")).collect();
    spec.facts.extend((0..others).map(|i| Fact::new(format!("k{:02}", i % 99), format!("{i:05}"), "other")));
    spec.budget.max_facts = 100_000;
    let (agents, invariants) = roster(&catalog, sandbox, &spec, "bench");
    let job = Job::new(&spec, &agents, &invariants).unwrap();
    (Arc::clone(&agents[0]), job.view())
}

fn call(c: &mut Criterion, sandbox: &Arc<Sandbox>, full: &Arc<Sandbox>) {
    let mut group = c.benchmark_group("call");
    group.measurement_time(Duration::from_secs(4));
    let (sandboxed, view) = setup(sandbox, 1, 0);
    let native = NativeReader(sandboxed.info().clone());
    assert_eq!(native.execute(&view).result, sandboxed.execute(&view).result, "same logic, same effect");
    group.bench_function("native", |b| b.iter(|| native.execute(&view)));
    group.bench_function("sandboxed", |b| b.iter(|| sandboxed.execute(&view)));
    let floor = floor::FloorGuest::new(&reader_bytes());
    assert_eq!(floor.execute(&view), 2, "the reader answers the one-fact context with two facts");
    group.bench_function("floor", |b| b.iter(|| floor.execute(&view)));
    let (lean, lean_view) = setup_guest(sandbox, "reader-lean", 1, 0);
    assert_eq!(lean.execute(&lean_view).result, sandboxed.execute(&view).result, "the same effect without std");
    group.bench_function("sandboxed-lean", |b| b.iter(|| lean.execute(&lean_view)));
    let lean_floor = floor::FloorGuest::new(&guest_bytes("reader-lean"));
    group.bench_function("floor-lean", |b| b.iter(|| lean_floor.execute(&view)));
    let (full_reset, view) = setup(full, 1, 0);
    group.bench_function("sandboxed-full-reset", |b| b.iter(|| full_reset.execute(&view)));
    group.finish();
}

fn calls(c: &mut Criterion, sandbox: &Arc<Sandbox>, full: &Arc<Sandbox>) {
    const N: usize = 512;
    let mut group = c.benchmark_group("calls");
    group.measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(N as u64));
    for (threads, sandbox, name) in
        [(1, sandbox, "threads-1"), (2, sandbox, "threads-2"), (2, full, "threads-2-full-reset")]
    {
        let (agent, view) = setup(sandbox, 1, 0);
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap());
        let executor = RayonExecutor::new(pool);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                use converge_engine::Executor;
                executor.map(N, &|_| agent.execute(&view).fuel)
            });
        });
    }
    // The floor's scaling: what wasmtime itself gets from a second thread on this machine.
    let (_, view) = setup(sandbox, 1, 0);
    let floor = floor::FloorGuest::new(&reader_bytes());
    for threads in [1, 2] {
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap());
        let executor = RayonExecutor::new(pool);
        group.bench_function(BenchmarkId::from_parameter(format!("floor-threads-{threads}")), |b| {
            b.iter(|| {
                use converge_engine::Executor;
                executor.map(N, &|_| floor.execute(&view))
            });
        });
    }
    group.finish();
}

fn view(c: &mut Criterion, sandbox: &Arc<Sandbox>) {
    let mut group = c.benchmark_group("view");
    group.measurement_time(Duration::from_secs(4));
    for (inputs, others) in [(100, 0), (100, 9_900)] {
        let (agent, view) = setup(sandbox, inputs, others);
        assert_eq!(view.len(), inputs + others);
        group.bench_function(BenchmarkId::from_parameter(inputs + others), |b| b.iter(|| agent.execute(&view)));
    }
    group.finish();
}

fn startup(c: &mut Criterion) {
    let d = dir("fifty");
    let bytes = reader_bytes();
    for i in 0..50 {
        // Fifty distinct agents: every `reader` in the bytes (its name) patched to `rd00NN`, same length.
        let name = format!("rd{i:04}");
        let mut patched = bytes.clone();
        let mut at = 0;
        while let Some(p) = patched[at..].windows(6).position(|w| w == b"reader") {
            patched[at + p..at + p + 6].copy_from_slice(name.as_bytes());
            at += p + 6;
        }
        std::fs::write(d.join(format!("{name}.wasm")), patched).unwrap();
    }
    let load = || {
        let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
        let catalog = Registry::new(sandbox, &d, Some(cache())).refresh().unwrap();
        assert_eq!(catalog.loaded.len(), 50, "{:?}", catalog.rejected);
    };
    load(); // fills the cache
    let mut group = c.benchmark_group("startup");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("50-cached", |b| b.iter(load));
    group.finish();
}

fn guest(name: &str) -> Vec<u8> {
    std::fs::read(GUESTS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).unwrap()).unwrap()
}

fn tool(c: &mut Criterion, sandbox: &Arc<Sandbox>) {
    let d = dir("tool");
    std::fs::create_dir_all(d.join("tools")).unwrap();
    std::fs::write(d.join("tool-caller.wasm"), guest("tool-caller")).unwrap();
    std::fs::write(d.join("tools").join("upper.wasm"), guest("tool-upper")).unwrap();
    let catalog =
        Registry::new(Arc::clone(sandbox), &d, Some(cache())).with_tools(Some(d.join("tools"))).refresh().unwrap();
    let upper = Arc::clone(catalog.tools.resolve("upper").unwrap());
    let mut group = c.benchmark_group("tool");
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("invoke", |b| {
        b.iter(|| converge_runtime::tools::invoke(sandbox, &upper, "hello", [7; 32]).result.unwrap());
    });
    for (name, call) in [("agent-denied", "undeclared\nhello"), ("agent-invoke", "upper\nhello")] {
        let mut spec = JobSpec::new("bench");
        spec.facts = vec![Fact::new("calls", "1", call)];
        let (agents, invariants) = roster(&catalog, sandbox, &spec, "bench");
        let job = Job::new(&spec, &agents, &invariants).unwrap();
        let (agent, view) = (Arc::clone(&agents[0]), job.view());
        let effect = agent.execute(&view).result.unwrap();
        assert!(effect.facts[0].content.starts_with(if name == "agent-invoke" { "ok:" } else { "denied:" }));
        group.bench_function(name, |b| b.iter(|| agent.execute(&view)));
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    assert!(sandbox.memory_reset().fast, "the fast reset needs a host without swap: {:?}", sandbox.memory_reset());
    let full = Arc::new(Sandbox::new(SandboxConfig { reset: MemoryReset::Full, ..SandboxConfig::default() }).unwrap());
    call(&mut c, &sandbox, &full);
    calls(&mut c, &sandbox, &full);
    view(&mut c, &sandbox);
    startup(&mut c);
    tool(&mut c, &sandbox);
    c.final_summary();
}
