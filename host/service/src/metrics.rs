//! What the service tells observers as jobs run ([`Observer`]), and the observer that counts for `/metrics`
//! (Prometheus text format) and `/v1/status` ([`Metrics`]). Gauges that the store or the queue already know
//! (jobs by status, queue depth) are read at scrape time, not kept twice.

use converge_engine::{CycleTrace, Outcome, Status, ToolOutcome};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the job-duration histogram, in seconds.
const BUCKETS: [f64; 14] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct AgentCounters {
    calls: BTreeMap<&'static str, u64>,
    fuel: u64,
    time_us: u64,
}

#[derive(Default)]
struct Inner {
    finished: BTreeMap<Status, u64>,
    buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    cycles: u64,
    agents: BTreeMap<String, AgentCounters>,
    /// Tool invocations by (tool, outcome), and fuel by tool.
    tool_calls: BTreeMap<(String, &'static str), u64>,
    tool_fuel: BTreeMap<String, u64>,
}

/// Hears of every cycle and every job's end, from the worker that ran it.
pub trait Observer: Send + Sync {
    /// A cycle ran.
    fn cycle(&self, trace: &CycleTrace);
    /// A job ended with `status` after `took` (its last run's wall time).
    fn finished(&self, status: Status, took: Duration);
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

impl Observer for Metrics {
    fn cycle(&self, trace: &CycleTrace) {
        self.count_cycle(trace);
    }

    fn finished(&self, status: Status, took: Duration) {
        self.count_end(status, took);
    }
}

/// The label of an agent call's outcome.
fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Applied => "applied",
        Outcome::Failed(k) => k.as_str(),
        Outcome::Conflict => "conflict",
        Outcome::OverBudget => "over_budget",
        _ => "skipped",
    }
}

/// Escape a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Count a cycle's agent calls.
    fn count_cycle(&self, trace: &CycleTrace) {
        let Ok(mut m) = self.0.lock() else { return };
        m.cycles += 1;
        for a in &trace.agents {
            let c = m.agents.entry(a.agent.clone()).or_default();
            *c.calls.entry(outcome_label(a.outcome)).or_default() += 1;
            c.fuel = c.fuel.saturating_add(a.fuel);
            c.time_us = c.time_us.saturating_add(a.time_us);
            for t in &a.tools {
                let outcome = match t.outcome {
                    ToolOutcome::Ok => "ok",
                    ToolOutcome::Denied => "denied",
                    ToolOutcome::Unknown => "unknown",
                    ToolOutcome::Failed => "failed",
                    ToolOutcome::Unavailable => "unavailable",
                };
                *m.tool_calls.entry((t.tool.clone(), outcome)).or_default() += 1;
                let fuel = m.tool_fuel.entry(t.tool.clone()).or_default();
                *fuel = fuel.saturating_add(t.fuel);
            }
        }
    }

    /// Count a job's end.
    fn count_end(&self, status: Status, took: Duration) {
        let Ok(mut m) = self.0.lock() else { return };
        *m.finished.entry(status).or_default() += 1;
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                m.buckets[i] += 1;
            }
        }
        m.duration_sum += secs;
        m.duration_count += 1;
    }

    /// The agent with the highest mean call time: `(name, mean µs)`.
    pub fn slowest_agent(&self) -> Option<(String, u64)> {
        let m = self.0.lock().ok()?;
        m.agents
            .iter()
            .filter_map(|(name, c)| {
                let calls: u64 = c.calls.values().sum();
                (calls > 0).then(|| (name.clone(), c.time_us / calls))
            })
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
    }

    /// Jobs ended by this process.
    pub fn finished_total(&self) -> u64 {
        self.0.lock().map_or(0, |m| m.finished.values().sum())
    }

    /// The Prometheus text exposition, with the gauges given by the caller.
    pub fn render(
        &self,
        jobs: &BTreeMap<Status, u64>,
        queue_depth: usize,
        queue_capacity: usize,
        running: usize,
        workers: usize,
    ) -> String {
        let mut out = String::new();
        let Ok(m) = self.0.lock() else { return out };
        let _ = writeln!(out, "# HELP converge_jobs Jobs in the store by status.\n# TYPE converge_jobs gauge");
        for (status, n) in jobs {
            let _ = writeln!(out, "converge_jobs{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP converge_jobs_finished_total Jobs this process ended, by status.\n# TYPE converge_jobs_finished_total counter"
        );
        for (status, n) in &m.finished {
            let _ = writeln!(out, "converge_jobs_finished_total{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP converge_job_duration_seconds Wall time of a job's last run.\n# TYPE converge_job_duration_seconds histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "converge_job_duration_seconds_bucket{{le=\"{bound}\"}} {}", m.buckets[i]);
        }
        let _ = writeln!(out, "converge_job_duration_seconds_bucket{{le=\"+Inf\"}} {}", m.duration_count);
        let _ = writeln!(out, "converge_job_duration_seconds_sum {}", m.duration_sum);
        let _ = writeln!(out, "converge_job_duration_seconds_count {}", m.duration_count);
        let _ = writeln!(
            out,
            "# HELP converge_cycles_total Cycles run.\n# TYPE converge_cycles_total counter\nconverge_cycles_total {}",
            m.cycles
        );
        let _ = writeln!(
            out,
            "# HELP converge_agent_calls_total Agent calls by agent and outcome.\n# TYPE converge_agent_calls_total counter"
        );
        for (agent, c) in &m.agents {
            for (outcome, n) in &c.calls {
                let _ =
                    writeln!(out, "converge_agent_calls_total{{agent=\"{}\",outcome=\"{outcome}\"}} {n}", label(agent));
            }
        }
        let _ = writeln!(
            out,
            "# HELP converge_agent_fuel_total Fuel consumed by agent.\n# TYPE converge_agent_fuel_total counter"
        );
        for (agent, c) in &m.agents {
            let _ = writeln!(out, "converge_agent_fuel_total{{agent=\"{}\"}} {}", label(agent), c.fuel);
        }
        let _ = writeln!(
            out,
            "# HELP converge_agent_call_seconds_total Wall time in agent calls by agent.\n# TYPE converge_agent_call_seconds_total counter"
        );
        for (agent, c) in &m.agents {
            #[allow(clippy::cast_precision_loss)]
            let secs = c.time_us as f64 / 1e6;
            let _ = writeln!(out, "converge_agent_call_seconds_total{{agent=\"{}\"}} {secs}", label(agent));
        }
        let _ = writeln!(
            out,
            "# HELP converge_tool_calls_total Tool invocations by tool (as called) and outcome.\n# TYPE converge_tool_calls_total counter"
        );
        for ((tool, outcome), n) in &m.tool_calls {
            let _ = writeln!(out, "converge_tool_calls_total{{tool=\"{}\",outcome=\"{outcome}\"}} {n}", label(tool));
        }
        let _ = writeln!(
            out,
            "# HELP converge_tool_fuel_total Fuel consumed by tool.\n# TYPE converge_tool_fuel_total counter"
        );
        for (tool, fuel) in &m.tool_fuel {
            let _ = writeln!(out, "converge_tool_fuel_total{{tool=\"{}\"}} {fuel}", label(tool));
        }
        let _ = writeln!(
            out,
            "# HELP converge_queue_depth Jobs waiting for a worker.\n# TYPE converge_queue_depth gauge\nconverge_queue_depth {queue_depth}"
        );
        let _ = writeln!(
            out,
            "# HELP converge_queue_capacity Admission bound of the queue.\n# TYPE converge_queue_capacity gauge\nconverge_queue_capacity {queue_capacity}"
        );
        let _ = writeln!(
            out,
            "# HELP converge_running_jobs Jobs running now.\n# TYPE converge_running_jobs gauge\nconverge_running_jobs {running}"
        );
        let _ = writeln!(
            out,
            "# HELP converge_workers Worker threads.\n# TYPE converge_workers gauge\nconverge_workers {workers}"
        );
        out
    }
}
