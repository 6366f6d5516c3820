//! The job service: admission into a bounded queue, a pool of worker threads that run jobs off the async
//! runtime (each job's agent calls fan out on the shared rayon pool), the store transitions of every job, live
//! events, and metrics. The HTTP layer ([`http`]) only translates requests into calls on [`Service`].
//!
//! A job is its spec plus its answers. A worker always runs a job from its spec, applying the stored answers as
//! the questions open; after a restart, an answer or a cancel it runs the job again from the start, and because
//! the engine is deterministic it reaches the same state. The audit trail keeps each cycle once.

pub mod http;
mod http_tools;
mod metrics;
mod queue;
pub mod server;
mod tools;

pub use metrics::Metrics;
pub use queue::{JobQueue, Permit};
pub use tools::load_stored;

use crate::registry::{Catalog, Registry};
use crate::runner::{Deadline, roster_with_tools};
use crate::sandbox::Sandbox;
use crate::store::{CycleRecord, Event, NewQuestion, Outcome, Park, Store, StoreError};
use converge_engine::{ErrorInfo, Job, JobResult, JobSpec, RayonExecutor, Stats, Status};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Unix time in milliseconds (metadata only; never part of a result that is hashed).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Worker threads, each running one job at a time.
    pub workers: usize,
    /// Jobs admitted but not started, at most.
    pub queue: usize,
    /// How often the agents directory is rescanned.
    pub rescan: Duration,
}

/// The executor of service jobs: a job's calls fan out on the rayon pool while fewer jobs run than the pool has
/// threads; once the jobs alone fill the cores, each runs its calls on its own worker thread, which saves two
/// thread hand-offs per cycle. Results come back in index order either way, so the choice never changes a result.
pub struct AdaptiveExecutor {
    rayon: RayonExecutor,
    threads: usize,
    active: std::sync::atomic::AtomicUsize,
}

impl AdaptiveExecutor {
    /// Fan out on `rayon` (a pool of `threads`) while there is room.
    pub fn new(rayon: RayonExecutor, threads: usize) -> Self {
        Self { rayon, threads, active: std::sync::atomic::AtomicUsize::new(0) }
    }

    fn enter(&self) {
        self.active.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn leave(&self) {
        self.active.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl converge_engine::Executor for AdaptiveExecutor {
    fn map<R: Send>(&self, len: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        if len <= 1 || self.active.load(std::sync::atomic::Ordering::Acquire) >= self.threads {
            converge_engine::SerialExecutor.map(len, f)
        } else {
            self.rayon.map(len, f)
        }
    }
}

/// Cycles of a job held before they are written (unless someone watches).
const MAX_PENDING_CYCLES: usize = 16;

/// Events a live subscriber may fall behind by before it re-reads the store.
const WATCH_BUFFER: usize = 256;

/// The running service. Cheap to share: everything is behind `Arc`s.
pub struct Service {
    store: Arc<dyn Store>,
    sandbox: Arc<Sandbox>,
    registry: Mutex<Registry>,
    catalog: RwLock<Arc<Catalog>>,
    executor: AdaptiveExecutor,
    queue: JobQueue,
    config: ServiceConfig,
    running: Mutex<BTreeMap<String, Arc<Deadline>>>,
    live: Mutex<BTreeMap<String, Arc<JobResult>>>,
    watchers: Arc<Watchers>,
    metrics: Metrics,
    started: Instant,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Live subscribers by job: the store's commit hook publishes each committed event to the job's channel.
#[derive(Default)]
pub struct Watchers(Mutex<BTreeMap<String, broadcast::Sender<Arc<Event>>>>);

impl Watchers {
    /// Publish a committed event; forget the job's channel at its end or when nobody listens.
    pub fn publish(&self, event: &Event) {
        let Ok(mut map) = self.0.lock() else { return };
        if let Some(tx) = map.get(&event.job)
            && (tx.send(Arc::new(event.clone())).is_err() || event.kind == "end")
        {
            map.remove(&event.job);
        }
    }

    /// Whether anyone listens to the job's live events.
    pub fn watched(&self, job: &str) -> bool {
        self.0.lock().is_ok_and(|m| m.get(job).is_some_and(|tx| tx.receiver_count() > 0))
    }

    fn subscribe(&self, job: &str) -> Option<broadcast::Receiver<Arc<Event>>> {
        let mut map = self.0.lock().ok()?;
        Some(map.entry(job.to_owned()).or_insert_with(|| broadcast::channel(WATCH_BUFFER).0).subscribe())
    }
}

/// A client mistake or a service failure, as the service sees it; the HTTP layer maps it to a status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue is full.
    #[error("the queue is full ({0} jobs waiting to start); retry later")]
    Overloaded(usize),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
}

impl Service {
    /// Build the service over a store, a sandbox and an agents registry, and load the agents once.
    ///
    /// # Errors
    /// The agents directory cannot be read.
    pub fn new(
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        mut registry: Registry,
        executor: AdaptiveExecutor,
        watchers: Arc<Watchers>,
        config: ServiceConfig,
    ) -> Result<Arc<Self>, crate::HostError> {
        let catalog = registry.refresh()?;
        let svc = Arc::new(Self {
            store,
            sandbox,
            registry: Mutex::new(registry),
            catalog: RwLock::new(Arc::new(catalog)),
            executor,
            queue: JobQueue::new(config.queue),
            config,
            running: Mutex::new(BTreeMap::new()),
            live: Mutex::new(BTreeMap::new()),
            watchers,
            metrics: Metrics::default(),
            started: Instant::now(),
        });
        svc.load_validated_tools();
        Ok(svc)
    }

    /// Queue every job a previous process left queued or running, and start the workers and the rescanner.
    ///
    /// # Errors
    /// The store cannot be read, or a thread cannot be started.
    pub fn start(self: &Arc<Self>) -> Result<usize, crate::HostError> {
        let pending = self.store.unfinished().map_err(|e| crate::HostError::BadInput(e.to_string()))?;
        let n = pending.len();
        for id in pending {
            self.queue.push(id);
        }
        for i in 0..self.config.workers {
            let svc = Arc::clone(self);
            std::thread::Builder::new()
                .name(format!("converge-worker-{i}"))
                .stack_size(8 << 20)
                .spawn(move || svc.work())
                .map_err(|e| crate::HostError::Engine(format!("starting a worker: {e}")))?;
        }
        let svc = Arc::downgrade(self);
        let every = self.config.rescan;
        std::thread::Builder::new()
            .name("converge-rescan".into())
            .spawn(move || {
                while let Some(svc) = svc.upgrade() {
                    if svc.queue.is_closed() {
                        break;
                    }
                    svc.rescan();
                    drop(svc);
                    std::thread::sleep(every);
                }
            })
            .map_err(|e| crate::HostError::Engine(format!("starting the rescanner: {e}")))?;
        Ok(n)
    }

    /// Stop taking jobs from the queue; running jobs are left to the next start.
    pub fn shutdown(&self) {
        self.queue.close();
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// What is loaded now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().map_or_else(|p| Arc::clone(&p.into_inner()), |c| Arc::clone(&c))
    }

    /// Rescan the agents directory now; returns the new catalog.
    pub fn rescan(&self) -> Arc<Catalog> {
        let fresh = self.registry.lock().ok().and_then(|mut r| match r.refresh() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "agents directory unreadable; keeping the last catalog");
                None
            }
        });
        if let Some(c) = fresh {
            let c = Arc::new(c);
            if let Ok(mut slot) = self.catalog.write() {
                *slot = Arc::clone(&c);
            }
            return c;
        }
        self.catalog()
    }

    /// The queue.
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Seconds since the service started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.lock().map_or(0, |r| r.len())
    }

    /// The latest per-cycle snapshot of a running job.
    pub fn snapshot(&self, id: &str) -> Option<Arc<JobResult>> {
        self.live.lock().ok()?.get(id).cloned()
    }

    /// Subscribe to a job's committed events (subscribe before reading the store, then skip what was read).
    pub fn watch(&self, id: &str) -> Option<broadcast::Receiver<Arc<Event>>> {
        self.watchers.subscribe(id)
    }

    /// Queue a stored job to (re)run, bypassing the bound: it was admitted already.
    pub fn requeue(&self, id: String) {
        self.queue.push(id);
    }

    /// Ask a running job to stop at its next check.
    pub fn interrupt(&self, id: &str) {
        if let Some(d) = self.running.lock().ok().and_then(|r| r.get(id).cloned()) {
            d.cancel();
        }
    }

    fn work(&self) {
        while let Some(id) = self.queue.pop() {
            let span = tracing::info_span!("job", job = %id);
            let _enter = span.enter();
            let deadline = Arc::new(Deadline::new(Duration::MAX));
            if let Ok(mut r) = self.running.lock() {
                r.insert(id.clone(), Arc::clone(&deadline));
            }
            self.executor.enter();
            let outcome = self.run_one(&id, &deadline);
            self.executor.leave();
            if let Err(e) = outcome {
                tracing::error!(error = %e, "job left unfinished; it resumes at the next start");
            }
            // Forget this run only: an answer may have queued the job again and another worker may run it now.
            if let Ok(mut r) = self.running.lock()
                && r.get(&id).is_some_and(|d| Arc::ptr_eq(d, &deadline))
            {
                r.remove(&id);
                if let Ok(mut l) = self.live.lock() {
                    l.remove(&id);
                }
            }
        }
    }

    /// Run one job to its next stop: an end (stored), or waiting for answers (stored as `waiting`).
    fn run_one(&self, id: &str, deadline: &Deadline) -> Result<(), StoreError> {
        let Some(record) = self.store.job(None, id)? else {
            tracing::warn!("queued job is not in the store");
            return Ok(());
        };
        if record.status.is_terminal() {
            return Ok(());
        }
        let spec = match JobSpec::from_json(&record.spec) {
            Ok(s) => s,
            Err(e) => return self.fail(id, "invalid_spec", &format!("the stored spec no longer parses: {e}")),
        };
        let catalog = self.catalog();
        // The job calls the trusted tools and its own tenant's validated ones, never another tenant's.
        let tools = if catalog.tools.has_validated() {
            Arc::new(catalog.tools.for_tenant(&record.tenant))
        } else {
            Arc::clone(&catalog.tools)
        };
        let (agents, invariants) = roster_with_tools(&catalog, &tools, &self.sandbox, &spec, id);
        let components = components(&catalog, &spec);
        let mut job = match Job::new(&spec, &agents, &invariants) {
            Ok(j) => j,
            Err(e) => return self.fail(id, "unknown_agent", &format!("cannot start: {e}")),
        };
        let started = wait(self.store.start(id, components, now_ms()))?;
        deadline.restart(Duration::from_millis(spec.budget.job_timeout_ms));
        let cancel_at = started.record.cancel_requested.then_some(started.record.cycles);
        let mut answers = started.answers;
        let mut seen: Vec<String> = Vec::new();
        let mut pending: Vec<CycleRecord> = Vec::new();
        loop {
            for (q, a) in &answers {
                if !seen.contains(q) && job.answer(q, a.clone()).is_ok() {
                    seen.push(q.clone());
                }
            }
            if cancel_at.is_some_and(|c| job.cycles() >= c) {
                deadline.cancel();
            }
            let cycle = job.cycles() + 1;
            let step = {
                let span = tracing::info_span!("cycle", job = %id, cycle);
                let _enter = span.enter();
                job.step(&self.executor, deadline).cloned()
            };
            if let Some(trace) = step {
                self.metrics.cycle(&trace);
                let questions = job
                    .open_questions()
                    .into_iter()
                    .filter(|q| trace.questions.contains(&q.id))
                    .map(|q| NewQuestion { id: q.id, prompt: q.prompt, agent: q.agent })
                    .collect();
                let text = serde_json::to_string(&trace).unwrap_or_default();
                pending.push(CycleRecord { cycle: trace.cycle, trace: text, questions });
                // A job run again after a crash produces its cycles again, so they need not be durable one by
                // one: they are written in one batch at the job's stop, or at once while someone watches live
                // or the batch grows.
                if self.watchers.watched(id) || pending.len() >= MAX_PENDING_CYCLES {
                    drop(self.store.cycles(id, std::mem::take(&mut pending), now_ms()));
                }
                let snapshot = job.result(id);
                if let Ok(mut l) = self.live.lock() {
                    l.insert(id.to_owned(), Arc::new(snapshot));
                }
                continue;
            }
            if !pending.is_empty() {
                drop(self.store.cycles(id, std::mem::take(&mut pending), now_ms()));
            }
            let status = job.status();
            if status == Status::Waiting {
                if deadline.is_cancelled() || cancel_at.is_some() {
                    job.cancel();
                    continue;
                }
                let outcome = self.outcome(&job, id, deadline);
                match wait(self.store.park(id, seen.clone(), outcome))? {
                    Park::Parked => return Ok(()),
                    Park::Answers(more) => {
                        // Answers that arrived while the job ran. One that cannot be applied now never will be
                        // at this stop: mark it seen so parking cannot loop.
                        for (q, a) in more {
                            if let Err(e) = job.answer(&q, a.clone()) {
                                tracing::warn!(question = %q, error = %e, "stored answer not applied");
                            }
                            seen.push(q.clone());
                            answers.insert(q, a);
                        }
                        continue;
                    }
                }
            }
            let outcome = self.outcome(&job, id, deadline);
            let elapsed = deadline.elapsed();
            wait(self.store.finish(id, outcome))?;
            self.metrics.finished(status, elapsed);
            tracing::info!(status = %status, cycles = job.cycles(), "job ended");
            return Ok(());
        }
    }

    fn outcome(&self, job: &Job, id: &str, deadline: &Deadline) -> Outcome {
        let _ = self;
        let mut result = job.result(id);
        result.stats.wall_time_ms = u64::try_from(deadline.elapsed().as_millis()).unwrap_or(u64::MAX);
        Outcome {
            status: result.status,
            cycles: result.cycles,
            context_hash: result.context_hash.clone(),
            result: serde_json::to_string(&result).unwrap_or_default(),
            now_ms: now_ms(),
        }
    }

    /// End a job that cannot be built (its spec or its agents are gone) as `agent_failed`, with the reason.
    fn fail(&self, id: &str, kind: &str, message: &str) -> Result<(), StoreError> {
        tracing::warn!(kind, message, "job cannot run");
        let result =
            placeholder(id, Status::AgentFailed, Some(ErrorInfo { kind: kind.into(), message: message.into() }));
        let outcome = Outcome {
            status: Status::AgentFailed,
            cycles: 0,
            context_hash: result.context_hash.clone(),
            result: serde_json::to_string(&result).unwrap_or_default(),
            now_ms: now_ms(),
        };
        wait(self.store.finish(id, outcome))?;
        self.metrics.finished(Status::AgentFailed, Duration::ZERO);
        Ok(())
    }
}

/// Block on a store reply (worker threads only, never the async runtime).
fn wait<T>(reply: crate::store::Reply<T>) -> Result<T, StoreError> {
    reply.blocking_recv().map_err(|_| StoreError::Closed)?
}

/// A result for a job that has not run (queued) or could not start.
pub fn placeholder(id: &str, status: Status, error: Option<ErrorInfo>) -> JobResult {
    JobResult {
        id: id.to_owned(),
        status,
        reason: None,
        cycles: 0,
        facts: Vec::new(),
        open_questions: Vec::new(),
        diagnostics: Vec::new(),
        context_hash: String::new(),
        deterministic: true,
        stats: Stats::default(),
        error,
    }
}

/// The components a job runs, by name, with their digests (recorded at each start, for audits and replays).
fn components(catalog: &Catalog, spec: &JobSpec) -> String {
    let mut out = BTreeMap::new();
    for (l, _) in catalog.agents() {
        if spec.agents.as_ref().is_none_or(|names| names.contains(&l.name)) {
            out.insert(l.name.clone(), l.digest.clone());
        }
    }
    for (l, _) in catalog.invariants() {
        if spec.invariants.contains(&l.name) {
            out.insert(l.name.clone(), l.digest.clone());
        }
    }
    serde_json::to_string(&out).unwrap_or_default()
}
