//! The components loaded, and what operators read: liveness, readiness, metrics, the status report, and this
//! API's own description.

use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use converge_service::{Inventory, Ready, Rejection, StatusReport};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// A loaded agent.
#[derive(Serialize, ToSchema)]
pub struct AgentView {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// SHA-256 of the file.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Keys it reads.
    pub reads: Vec<String>,
    /// Keys it writes.
    pub writes: Vec<String>,
    /// Tools it may call.
    pub tools: Vec<String>,
    /// Whether its failure fails the job.
    pub required: bool,
    /// What it does.
    pub description: String,
}

/// A loaded invariant.
#[derive(Serialize, ToSchema)]
pub struct InvariantView {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// SHA-256 of the file.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// `structural`, `semantic` or `acceptance`.
    pub class: String,
    /// What it checks.
    pub description: String,
}

/// A file of the agents directory that did not load.
#[derive(Serialize, ToSchema)]
pub struct RejectedView {
    /// The file.
    pub file: String,
    /// The component's name, if it got that far.
    pub name: Option<String>,
    /// Why.
    pub reason: String,
}

impl From<&Rejection> for RejectedView {
    fn from(r: &Rejection) -> Self {
        Self { file: r.file.clone(), name: r.name.clone(), reason: r.reason.clone() }
    }
}

/// What the agents directory holds.
#[derive(Serialize, ToSchema)]
pub struct AgentsView {
    /// Loaded agents, by name.
    pub agents: Vec<AgentView>,
    /// Loaded invariants, by name.
    pub invariants: Vec<InvariantView>,
    /// Files that did not load, by file name.
    pub rejected: Vec<RejectedView>,
}

impl From<&Inventory> for AgentsView {
    fn from(c: &Inventory) -> Self {
        Self {
            agents: c
                .agents
                .iter()
                .map(|a| AgentView {
                    name: a.component.name.clone(),
                    file: a.component.file.clone(),
                    digest: a.component.digest.clone(),
                    size: a.component.size,
                    reads: a.info.reads.clone(),
                    writes: a.info.writes.clone(),
                    tools: a.info.tools.clone(),
                    required: a.info.required,
                    description: a.info.description.clone(),
                })
                .collect(),
            invariants: c
                .invariants
                .iter()
                .map(|i| InvariantView {
                    name: i.component.name.clone(),
                    file: i.component.file.clone(),
                    digest: i.component.digest.clone(),
                    size: i.component.size,
                    class: i.info.class.to_string(),
                    description: i.info.description.clone(),
                })
                .collect(),
            rejected: c.rejected.iter().map(RejectedView::from).collect(),
        }
    }
}

/// The components loaded now (the directory is rescanned first).
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses((status = 200, body = AgentsView), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_agents(State(st): State<AppState>, Tenant(_): Tenant) -> Result<Json<AgentsView>, ApiError> {
    let svc = Arc::clone(&st.svc);
    let inventory = tokio::task::spawn_blocking(move || svc.rescan()).await.map_err(ApiError::internal)?;
    Ok(Json(AgentsView::from(inventory.as_ref())))
}

/// Liveness.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness: the store answers and at least one agent is loaded (503 otherwise).
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub(crate) async fn ready(State(st): State<AppState>) -> (StatusCode, Json<Ready>) {
    let ready = st.svc.ready().await;
    let code = if ready.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(ready))
}

/// Prometheus metrics: jobs by status, job duration, agent calls by outcome, fuel by agent, queue depth,
/// running jobs.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(State(st): State<AppState>) -> Response {
    let text = st.svc.metrics_text().await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// A status report for operators.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, body = StatusReport), (status = 401, body = ErrorBody)))]
pub(crate) async fn status(State(st): State<AppState>, Tenant(_): Tenant) -> Json<StatusReport> {
    Json(st.svc.status().await)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi(State(st): State<AppState>) -> Response {
    let inventory = st.svc.inventory();
    let facts = crate::openapi::Facts {
        auth: st.config.auth.enabled(),
        agents: inventory.agents.iter().map(|a| a.component.name.clone()).collect(),
        invariants: inventory.invariants.iter().map(|i| i.component.name.clone()).collect(),
    };
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::document(&st.openapi, &facts)).into_response()
}
