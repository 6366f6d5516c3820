//! What operators read: readiness, the status report, and the Prometheus text.

use crate::service::Service;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// Readiness.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ready {
    /// Whether the service can take jobs.
    pub ready: bool,
    /// The store answers.
    pub store: bool,
    /// Agents loaded.
    pub agents: usize,
}

/// The slowest agent by mean call time.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlowAgent {
    /// Its name.
    pub name: String,
    /// Mean wall time per call, µs.
    pub mean_call_us: u64,
}

/// The status report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusReport {
    /// `healthy`, `degraded` (queue over 80% full, rejected components, or no worker free with jobs queued for
    /// over 10 s) or `critical` (store unreachable, no agents, or queue full).
    pub status: String,
    /// Why the status is not `healthy`.
    pub reasons: Vec<String>,
    /// Jobs waiting for a worker.
    pub queue_depth: usize,
    /// The queue's admission bound.
    pub queue_capacity: usize,
    /// Age of the oldest queued job, ms.
    pub oldest_queued_ms: Option<u64>,
    /// Jobs running now.
    pub running: usize,
    /// Worker threads.
    pub workers: usize,
    /// running / workers.
    pub utilization: f64,
    /// The slowest agent so far.
    pub slowest_agent: Option<SlowAgent>,
    /// Agents loaded.
    pub agents: usize,
    /// Components rejected.
    pub rejected: usize,
    /// Jobs ended by this process.
    pub jobs_finished: u64,
    /// Seconds since start.
    pub uptime_s: u64,
}

impl Service {
    /// Whether the store answers (read on the blocking pool).
    async fn store_answers(&self) -> bool {
        let store = Arc::clone(&self.store);
        matches!(tokio::task::spawn_blocking(move || store.ping()).await, Ok(Ok(())))
    }

    /// How long the oldest queued job has waited, in ms: by the store's records when it is shared, else by this
    /// process's queue.
    async fn oldest_queued_ms(&self) -> Option<u64> {
        if !self.store.shared() {
            return self.queue.oldest_wait().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        let store = Arc::clone(&self.store);
        let oldest = tokio::task::spawn_blocking(move || store.oldest_queued()).await.ok()?.ok()??;
        Some(crate::now_ms().saturating_sub(oldest))
    }

    /// Readiness: the store answers, at least one agent is loaded, and the service takes jobs.
    pub async fn ready(&self) -> Ready {
        let store = self.store_answers().await;
        let agents = self.inventory().agents.len();
        Ready { ready: store && agents > 0 && !self.is_shutting_down(), store, agents }
    }

    /// The status report.
    pub async fn status(&self) -> StatusReport {
        let store_ok = self.store_answers().await;
        let inventory = self.inventory();
        let (depth, capacity) = (self.queue_depth().await, self.queue.capacity());
        let oldest = self.oldest_queued_ms().await;
        let agents = inventory.agents.len();
        let mut critical = Vec::new();
        let mut degraded = Vec::new();
        if !store_ok {
            critical.push("the store does not answer".to_owned());
        }
        if agents == 0 {
            critical.push("no agent is loaded".to_owned());
        }
        if depth >= capacity {
            critical.push(format!("the queue is full ({depth} of {capacity})"));
        } else if depth * 5 >= capacity * 4 {
            degraded.push(format!("the queue is over 80% full ({depth} of {capacity})"));
        }
        if !inventory.rejected.is_empty() {
            degraded.push(format!("{} component(s) rejected; see /v1/agents", inventory.rejected.len()));
        }
        if oldest.is_some_and(|ms| ms > 10_000) {
            degraded.push("a job has waited over 10 s for a worker".to_owned());
        }
        let status = if !critical.is_empty() {
            "critical"
        } else if !degraded.is_empty() {
            "degraded"
        } else {
            "healthy"
        };
        let running = self.running();
        let workers = self.config.workers;
        #[allow(clippy::cast_precision_loss)]
        let utilization = if workers == 0 { 0.0 } else { running as f64 / workers as f64 };
        critical.extend(degraded);
        StatusReport {
            status: status.into(),
            reasons: critical,
            queue_depth: depth,
            queue_capacity: capacity,
            oldest_queued_ms: oldest,
            running,
            workers,
            utilization,
            slowest_agent: self.metrics.slowest_agent().map(|(name, mean_call_us)| SlowAgent { name, mean_call_us }),
            agents,
            rejected: inventory.rejected.len(),
            jobs_finished: self.metrics.finished_total(),
            uptime_s: self.uptime().as_secs(),
        }
    }

    /// The Prometheus text exposition: the counters, and the gauges read now.
    pub async fn metrics_text(&self) -> String {
        let store = Arc::clone(&self.store);
        let counts =
            tokio::task::spawn_blocking(move || store.counts()).await.ok().and_then(Result::ok).unwrap_or_default();
        let depth = self.queue_depth().await;
        self.metrics.render(&counts, depth, self.queue.capacity(), self.running(), self.config.workers)
    }
}
