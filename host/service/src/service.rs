//! The [`Service`] value: the store, the runtime, the queue and the workers, and the plumbing every call shares.

use crate::error::ServiceError;
use crate::executor::AdaptiveExecutor;
use crate::metrics::{Metrics, Observer};
use crate::queue::JobQueue;
use crate::runtime::{Inventory, Runtime};
use crate::unstored::Unstored;
use crate::watch::{Published, Watchers};
use crate::worker::Run;
use converge_engine::JobResult;
use converge_store::{Notice, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, broadcast};

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
    /// Longest `wait` a submission may ask for.
    pub max_wait: Duration,
    /// Tool validations admitted to wait behind the running one; more are refused before their body is read
    /// (each holds up to 33 MiB while it waits).
    pub validations_waiting: usize,
    /// `Retry-After` seconds a refusal for load suggests.
    pub retry_after: u64,
    /// This process's name, held with its leases (for operators; any unique string).
    pub owner: String,
    /// How long a run's lease holds without renewal; the lease keeper renews every third of it.
    pub lease: Duration,
    /// Runs of one job that may end without a stop (the process died, the lease expired) before the job is ended
    /// `agent_failed` (`attempts_exhausted`) instead of run again.
    pub max_attempts: u32,
    /// How often a worker of a shared store looks for claimable work when no doorbell rang.
    pub poll: Duration,
    /// Makes each run's `job` span a child of the trace the job was submitted under (the host's tracing
    /// exporter knows how; without one, runs start no trace of their own).
    pub span_parent: SpanParent,
}

/// Given a `job` span (not yet entered) and the job's stored `traceparent`, makes the span its child.
pub type SetParent = dyn Fn(&tracing::Span, &str) + Send + Sync;

/// Sets a `job` span's parent from the job's stored `traceparent`, before the span is entered.
#[derive(Clone, Default)]
pub struct SpanParent(pub Option<Arc<SetParent>>);

impl std::fmt::Debug for SpanParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "SpanParent(set)" } else { "SpanParent(none)" })
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            queue: 4096,
            rescan: Duration::from_secs(2),
            max_wait: Duration::from_mins(1),
            validations_waiting: 3,
            retry_after: 1,
            owner: format!("converge-{}", std::process::id()),
            lease: Duration::from_secs(30),
            max_attempts: 3,
            poll: Duration::from_secs(1),
            span_parent: SpanParent::default(),
        }
    }
}

/// The running service. Cheap to share: everything is behind `Arc`s.
pub struct Service {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) executor: AdaptiveExecutor,
    pub(crate) queue: JobQueue,
    pub(crate) config: ServiceConfig,
    /// Each job a worker runs now.
    pub(crate) running: Mutex<BTreeMap<String, Arc<Run>>>,
    /// The latest per-cycle result of each running job.
    pub(crate) live: Mutex<BTreeMap<String, Arc<JobResult>>>,
    /// Jobs admitted and not stored yet (see `unstored`), by id.
    pub(crate) unstored: Mutex<BTreeMap<String, Unstored>>,
    pub(crate) watchers: Arc<Watchers>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) observers: Vec<Arc<dyn Observer>>,
    /// Validations running or waiting (`1 + validations_waiting` places).
    pub(crate) validation_places: Arc<Semaphore>,
    /// Validations run one at a time.
    pub(crate) validation_turn: Arc<Semaphore>,
    /// The shared queue's depth as admission last read it, and when, plus the jobs this process admitted since.
    pub(crate) admission_depth: Mutex<Option<(Instant, usize)>>,
    started: Instant,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Service {
    /// The service over a store and a runtime. `watchers` must be the ones the store's commit hook publishes
    /// to. Loads the components once and makes every stored accepted tool callable again.
    ///
    /// # Errors
    /// The agents or tools directory cannot be read.
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Arc<dyn Runtime>,
        executor: AdaptiveExecutor,
        watchers: Arc<Watchers>,
        config: ServiceConfig,
    ) -> Result<Arc<Self>, ServiceError> {
        runtime.refresh().map_err(|e| ServiceError::Internal(e.to_string()))?;
        let metrics = Arc::new(Metrics::default());
        let svc = Arc::new(Self {
            store,
            runtime,
            executor,
            queue: JobQueue::new(config.queue),
            running: Mutex::new(BTreeMap::new()),
            live: Mutex::new(BTreeMap::new()),
            unstored: Mutex::new(BTreeMap::new()),
            watchers,
            observers: vec![Arc::clone(&metrics) as Arc<dyn Observer>],
            metrics,
            validation_places: Arc::new(Semaphore::new(config.validations_waiting.saturating_add(1))),
            validation_turn: Arc::new(Semaphore::new(1)),
            config,
            admission_depth: Mutex::new(None),
            started: Instant::now(),
        });
        svc.load_validated_tools();
        let weak = Arc::downgrade(&svc);
        svc.store.listen(Arc::new(move |notice| {
            if let Some(svc) = weak.upgrade() {
                svc.on_notice(notice);
            }
        }));
        Ok(svc)
    }

    /// Queue every job a previous process left queued or running, and start the workers and the rescanner.
    /// Returns how many jobs were resumed.
    ///
    /// # Errors
    /// The store cannot be read, or a thread cannot be started.
    pub fn start(self: &Arc<Self>) -> Result<usize, ServiceError> {
        let pending = self.store.unfinished()?;
        let n = pending.len();
        for id in pending {
            self.queue.push(id);
        }
        for i in 0..self.config.workers {
            let svc = Arc::clone(self);
            std::thread::Builder::new()
                .name(format!("converge-worker-{i}"))
                .stack_size(self.runtime.stack_size())
                .spawn(move || svc.work())
                .map_err(|e| ServiceError::Internal(format!("starting a worker: {e}")))?;
        }
        let every = (self.config.lease / 3).max(Duration::from_millis(10));
        self.every("converge-leases", "the lease keeper", every, |svc| {
            svc.renew_leases();
            true
        })?;
        if self.store.shared() {
            self.every("converge-cycles", "the cycle flusher", crate::worker::LIVE_DELAY / 2, |svc| {
                svc.flush_held_cycles();
                true
            })?;
        }
        self.every("converge-rescan", "the rescanner", self.config.rescan, |svc| {
            if svc.queue.is_closed() {
                return false;
            }
            svc.rescan();
            true
        })?;
        Ok(n)
    }

    /// A thread named `name` that calls `f` every `period` while the service lives and `f` returns `true`.
    fn every(
        self: &Arc<Self>,
        name: &str,
        what: &str,
        period: Duration,
        f: impl Fn(&Self) -> bool + Send + 'static,
    ) -> Result<(), ServiceError> {
        let svc = Arc::downgrade(self);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Some(svc) = svc.upgrade() {
                    if !f(&svc) {
                        break;
                    }
                    drop(svc);
                    std::thread::sleep(period);
                }
            })
            .map(drop)
            .map_err(|e| ServiceError::Internal(format!("starting {what}: {e}")))
    }

    /// Stop taking jobs from the queue; running jobs are left to the next start (or, on a shared store, to any
    /// replica once their leases expire).
    pub fn shutdown(&self) {
        self.queue.close();
        self.store_queued_unstored();
    }

    /// Drain: claim nothing more (readiness fails from now on), let the running jobs finish within `within`,
    /// then give the rest back so another process takes them at once. Returns how many were given back.
    pub fn drain(&self, within: Duration) -> usize {
        self.queue.close();
        self.store_queued_unstored();
        let start = Instant::now();
        while self.running() > 0 && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(20));
        }
        let runs: Vec<Arc<Run>> = self.running.lock().map(|r| r.values().cloned().collect()).unwrap_or_default();
        for run in &runs {
            run.deadline.release();
        }
        // A released run stops at its next check, after the call in flight (each call has its own time limit).
        let grace = Instant::now();
        while self.running() > 0 && grace.elapsed() < Duration::from_mins(1) {
            std::thread::sleep(Duration::from_millis(20));
        }
        runs.len()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// What is loaded now.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.runtime.inventory()
    }

    /// Look at the agents and tools directories again; returns what is loaded now (the last catalog when a
    /// directory cannot be read).
    pub fn rescan(&self) -> Arc<Inventory> {
        match self.runtime.refresh() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "a components directory is unreadable; keeping the last catalog");
                self.runtime.inventory()
            }
        }
    }

    /// The counters behind `/metrics` and `/v1/status`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Time since the service started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Jobs waiting for a worker: counted in the store when it is shared (the queue of every replica), else in
    /// this process's queue.
    pub async fn queue_depth(&self) -> usize {
        if !self.store.shared() {
            return self.queue.len();
        }
        let store = Arc::clone(&self.store);
        let n = tokio::task::spawn_blocking(move || store.queued()).await.ok().and_then(Result::ok).unwrap_or(0);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Whether the service has stopped taking jobs.
    pub fn is_shutting_down(&self) -> bool {
        self.queue.is_closed()
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.lock().map_or(0, |r| r.len())
    }

    /// The latest per-cycle result of a running job.
    pub(crate) fn snapshot(&self, id: &str) -> Option<Arc<JobResult>> {
        self.live.lock().ok()?.get(id).cloned()
    }

    /// Subscribe to a job's committed events.
    pub(crate) fn watch(&self, id: &str) -> Option<broadcast::Receiver<Arc<Published>>> {
        self.watchers.subscribe(id)
    }

    /// Ask a running job to stop at its next check.
    pub(crate) fn interrupt(&self, id: &str) {
        if let Some(run) = self.running.lock().ok().and_then(|r| r.get(id).cloned()) {
            run.deadline.cancel();
        }
    }

    /// A change another process (or this one) committed to a shared store.
    fn on_notice(self: &Arc<Self>, notice: &Notice) {
        match notice {
            Notice::Event(e) => self.watchers.publish(e),
            // A doorbell: a worker wakes and claims whatever is claimable.
            Notice::Claimable => self.queue.ring(),
            Notice::Cancel(job) => self.interrupt(job),
            Notice::Tool { tenant, digest } => {
                let (svc, tenant, digest) = (Arc::clone(self), tenant.clone(), digest.clone());
                // Loading a tool compiles it: off the thread that delivers notices.
                let _ = std::thread::Builder::new().name("converge-tool-sync".into()).spawn(move || {
                    match svc.store.tool(&tenant, &digest) {
                        Ok(Some(record)) => svc.sync_tool(&record),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "reading a changed tool failed"),
                    }
                });
            }
            _ => {}
        }
    }

    /// Tell every observer.
    pub(crate) fn observe(&self, f: impl Fn(&dyn Observer)) {
        for o in &self.observers {
            f(o.as_ref());
        }
    }
}

/// Run a store read on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ServiceError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ServiceError::from),
        Err(e) => Err(ServiceError::Internal(format!("a blocking read failed: {e}"))),
    }
}

/// Await a store write's reply.
pub(crate) async fn reply<T>(r: converge_store::Reply<T>) -> Result<T, ServiceError> {
    match r.await {
        Ok(r) => r.map_err(ServiceError::from),
        Err(_) => Err(StoreError::Closed.into()),
    }
}
