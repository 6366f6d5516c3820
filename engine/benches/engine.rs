//! Benchmarks of the engine alone, with native agents and no sandbox (issue #2).
//!
//! - `merge/<agents>x<facts>`: one cycle in which every agent returns a clone of a prepared effect of new facts,
//!   run on the [`SerialExecutor`], so the time is the engine's validation, merge and insertion (plus the clone
//!   each agent makes). Criterion reports facts merged per second.
//! - `cycle_1000_agents/<executor>`: one cycle of 1,000 agents that each read one seed key and derive a few
//!   facts from `view.added(..)`, on the serial executor and on rayon pools of 1 and 2 threads.
//!
//! Building the [`Job`] is setup; only `job.step(..)` is measured. Run with
//! `cargo bench -p converge-engine --bench engine`; see BENCHMARKS.md for the numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use converge_engine::{
    Agent, AgentInfo, Budget, Effect, Execution, Executor, Fact, Job, JobSpec, NoInterrupt, RayonExecutor,
    SerialExecutor, Status, View,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;

/// Seed keys the cycle agents read; agent `i` reads `in/<i % SEED_KEYS>`.
const SEED_KEYS: usize = 10;
/// Seed facts under each seed key, so each cycle agent derives this many facts.
const SEEDS_PER_KEY: usize = 4;
/// Agents in the cycle benchmark.
const CYCLE_AGENTS: usize = 1_000;

/// An agent that returns a clone of the same prepared effect every time.
struct Emit {
    info: AgentInfo,
    effect: Effect,
}

impl Agent for Emit {
    fn info(&self) -> &AgentInfo {
        &self.info
    }

    fn execute(&self, _view: &View) -> Execution {
        self.effect.clone().into()
    }
}

/// An agent that derives one fact from each fact added under the key it reads.
struct Derive {
    info: AgentInfo,
}

impl Agent for Derive {
    fn info(&self) -> &AgentInfo {
        &self.info
    }

    fn execute(&self, view: &View) -> Execution {
        let out = &self.info.writes[0];
        let facts = self.info.reads.iter().flat_map(|key| view.added(key)).map(|f| {
            Fact::new(out.as_str(), format!("{}-{}", self.info.name, f.id), format!("{{\"from\":{:?}}}", f.content))
        });
        Effect { facts: facts.collect(), ..Effect::default() }.into()
    }
}

fn spec(max_facts: u64, facts: Vec<Fact>) -> JobSpec {
    let mut spec = JobSpec::new("bench");
    spec.budget = Budget { max_facts, max_cycles: 10, ..Budget::default() };
    spec.facts = facts;
    spec
}

/// `agents` agents, each emitting `per_agent` new facts under one shared key.
fn emitters(agents: usize, per_agent: usize) -> Vec<Arc<dyn Agent>> {
    (0..agents)
        .map(|a| {
            let name = format!("a{a:05}");
            let facts = (0..per_agent)
                .map(|j| Fact::new("merged", format!("{name}-{j:06}"), format!("{{\"agent\":{a},\"n\":{j}}}")))
                .collect();
            let info = AgentInfo { name, writes: vec!["merged".into()], ..AgentInfo::default() };
            Arc::new(Emit { info, effect: Effect { facts, ..Effect::default() } }) as Arc<dyn Agent>
        })
        .collect()
}

fn derivers() -> Vec<Arc<dyn Agent>> {
    (0..CYCLE_AGENTS)
        .map(|a| {
            let info = AgentInfo {
                name: format!("d{a:05}"),
                reads: vec![format!("in/{}", a % SEED_KEYS)],
                writes: vec![format!("out/{}", a % SEED_KEYS)],
                ..AgentInfo::default()
            };
            Arc::new(Derive { info }) as Arc<dyn Agent>
        })
        .collect()
}

fn seeds() -> Vec<Fact> {
    (0..SEED_KEYS)
        .flat_map(|k| {
            (0..SEEDS_PER_KEY).map(move |j| Fact::new(format!("in/{k}"), format!("s{j}"), format!("{k}.{j}")))
        })
        .collect()
}

/// Run one cycle and return the job, so dropping it is not measured.
fn one_cycle<E: Executor>(mut job: Job, executor: &E, expect_inserted: u64) -> Job {
    let trace = job.step(executor, &NoInterrupt).expect("the job runs a cycle");
    assert_eq!(trace.inserted, expect_inserted, "every fact is inserted");
    assert_eq!(trace.status, Status::Running);
    job
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    group.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for (agents, per_agent) in [(100, 1_000), (1_000, 100)] {
        let total = (agents * per_agent) as u64;
        let roster = emitters(agents, per_agent);
        let spec = spec(total + 1_000, Vec::new());
        group.throughput(Throughput::Elements(total));
        group.bench_function(BenchmarkId::from_parameter(format!("{agents}x{per_agent}")), |b| {
            b.iter_batched(
                || Job::new(&spec, &roster, &[]).unwrap(),
                |job| one_cycle(job, &SerialExecutor, total),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("cycle_1000_agents");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let roster = derivers();
    let spec = spec(100_000, seeds());
    let total = (CYCLE_AGENTS * SEEDS_PER_KEY) as u64;
    group.throughput(Throughput::Elements(total));
    let pool = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        RayonExecutor::new(Arc::new(pool))
    };
    let (rayon1, rayon2) = (pool(1), pool(2));
    let setup = || Job::new(&spec, &roster, &[]).unwrap();
    group.bench_function("serial", |b| {
        b.iter_batched(setup, |job| one_cycle(job, &SerialExecutor, total), BatchSize::SmallInput);
    });
    group.bench_function("rayon-1", |b| {
        b.iter_batched(setup, |job| one_cycle(job, &rayon1, total), BatchSize::SmallInput);
    });
    group.bench_function("rayon-2", |b| {
        b.iter_batched(setup, |job| one_cycle(job, &rayon2, total), BatchSize::SmallInput);
    });
    group.finish();
}

fn main() {
    // What `criterion_group!`/`criterion_main!` expand to, written out so the entry point needs no allowed lint.
    let mut c = Criterion::default().configure_from_args();
    merge(&mut c);
    cycle(&mut c);
    c.final_summary();
}
