//! The HTTP API (SPEC §5): axum handlers that turn requests into [`Service`] calls and answers into JSON. Every
//! error is `{"error": {"kind", "message"}}` with an honest status; a client's mistake is never a 5xx. The
//! OpenAPI document is generated from the same handlers and types (`utoipa`), so it cannot list a route the
//! router lacks.
//!
//! This layer never runs a job and never blocks the async runtime on a job: the store's writes are awaited,
//! its reads run on the blocking pool.

use super::{Service, ServiceError, placeholder};
use crate::registry::Catalog;
use crate::runner::roster;
use crate::store::{
    Admission, AnswerOutcome, CancelOutcome, Event, JobRecord, JobSummary, ListFilter, NewJob, StoreError,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use converge_engine::{CycleTrace, Job, JobResult, JobSpec, Status};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body, in bytes (413 above).
    pub max_body: usize,
    /// Time allowed to receive a request body (408 after).
    pub body_timeout: Duration,
    /// Longest `?wait=` honoured.
    pub max_wait: Duration,
    /// `Retry-After` seconds on 503.
    pub retry_after: u64,
    /// Tool validations admitted to wait behind the running one; more get 503 before their body is read (each
    /// holds up to 33 MiB while it waits).
    pub validations_waiting: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            body_timeout: Duration::from_secs(10),
            max_wait: Duration::from_mins(1),
            retry_after: 1,
            validations_waiting: 3,
        }
    }
}

/// Who may call the API: bearer tokens by tenant, or nobody checks (one tenant, `default`).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// SHA-256 of each token, with its tenant. Empty: authentication is off.
    tokens: Vec<([u8; 32], String)>,
}

/// The tenant of a request when authentication is off.
pub const DEFAULT_TENANT: &str = "default";

impl Auth {
    /// No authentication: every request is tenant `default`.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parse a token file: one `TENANT TOKEN` per line; blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// A malformed line (named by number), a short token, a duplicate token, or no token at all.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(tenant), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `TENANT TOKEN`", i + 1));
            };
            if token.len() < 16 {
                return Err(format!("line {}: the token is shorter than 16 characters", i + 1));
            }
            if !tenant.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || tenant.len() > 64 {
                return Err(format!("line {}: a tenant is 1-64 characters of [A-Za-z0-9._-]", i + 1));
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if tokens.iter().any(|(d, _)| *d == digest) {
                return Err(format!("line {}: the token is listed twice", i + 1));
            }
            tokens.push((digest, tenant.to_owned()));
        }
        if tokens.is_empty() {
            return Err("no tokens".into());
        }
        Ok(Self { tokens })
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The tenant of a presented token. Every entry is compared, in constant time, whatever matches.
    fn tenant(&self, token: &str) -> Option<String> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (digest, tenant) in &self.tokens {
            let diff = digest.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(diff) == 0 {
                found = Some(tenant.clone());
            }
        }
        found
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub(super) svc: Arc<Service>,
    auth: Arc<Auth>,
    pub(super) config: Arc<HttpConfig>,
    openapi: Arc<String>,
    /// Tool validations run one at a time.
    pub(super) validations: Arc<tokio::sync::Semaphore>,
    /// Validations admitted at once, running or waiting (`1 + validations_waiting`).
    pub(super) validation_slots: Arc<tokio::sync::Semaphore>,
}

/// An API error: status, kind, message, and `Retry-After` for 503.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

/// The error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable kind (`invalid_spec`, `not_found`, `overloaded`...).
    kind: String,
    /// A sentence for humans, naming the field or the cause.
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), retry_after: None }
    }

    pub(super) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    /// 503 `overloaded`, with `Retry-After`.
    pub(super) fn overloaded(message: impl Into<String>, retry_after: u64) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
        err.retry_after = Some(retry_after);
        err
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the service failed; the request was not applied")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        let mut err =
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the store is unavailable; retry later");
        err.retry_after = Some(1);
        err
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(s) => s.into(),
            ServiceError::Overloaded(_) | ServiceError::ShuttingDown => {
                let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string());
                err.retry_after = Some(1);
                err
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { kind: self.kind.to_owned(), message: self.message } };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The authenticated tenant of a request.
pub struct Tenant(pub(super) String);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !state.auth.enabled() {
            return Ok(Self(DEFAULT_TENANT.to_owned()));
        }
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("an `Authorization: Bearer <token>` header is required"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        state.auth.tenant(token.trim()).map(Self).ok_or_else(|| unauthorized("the token is not valid"))
    }
}

/// Read a whole request body under the size limit and the time limit.
pub(super) async fn read_body(body: Body, headers: &HeaderMap, config: &HttpConfig) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {} bytes", config.max_body),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > config.max_body as u64
    {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, config.max_body);
    match tokio::time::timeout(config.body_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", "the body did not arrive in time")),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("reading the body: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")) {
        None => Ok(()),
        Some(v) if v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) => Ok(()),
        Some(v) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be application/json, not {v:?}"),
        )),
    }
}

/// Parse JSON text into `T`: a syntax error is a 400, a well-formed body with a wrong field a 422 naming it.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "the body is not UTF-8"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {e}")))?;
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("{field}: {}", e.into_inner()))
    })
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(e)),
    }
}

pub(super) async fn reply<T>(r: crate::store::Reply<T>) -> Result<T, ApiError> {
    match r.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(StoreError::Closed.into()),
    }
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ApiError::not_found("such job"));
    }
    Ok(())
}

async fn load_job(svc: &Arc<Service>, tenant: &str, id: &str) -> Result<JobRecord, ApiError> {
    check_id(id)?;
    let store = Arc::clone(svc.store());
    let (tenant, id2) = (tenant.to_owned(), id.to_owned());
    blocking(move || store.job(Some(&tenant), &id2)).await?.ok_or_else(|| ApiError::not_found(&format!("job {id}")))
}

/// The SPEC §4 result of a job as it stands: the stored result when waiting or ended, the last cycle's snapshot
/// while running, an empty result while queued.
fn current_result(svc: &Service, record: &JobRecord) -> JobResult {
    if record.status == Status::Running
        && let Some(snap) = svc.snapshot(&record.id)
    {
        let mut r = (*snap).clone();
        r.status = Status::Running;
        return r;
    }
    if let Some(text) = &record.result
        && let Ok(mut r) = serde_json::from_str::<JobResult>(text)
    {
        r.status = record.status;
        return r;
    }
    placeholder(&record.id, record.status, None)
}

// ---- /v1/jobs ----

/// `POST /v1/jobs` answer: the job's id and status.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The job id.
    pub id: String,
    /// Its status.
    pub status: Status,
}

/// Query of `POST /v1/jobs`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SubmitQuery {
    /// Wait up to this many seconds for the job to end; 200 with the result if it does, else 202.
    pub wait: Option<f64>,
}

/// Submit a job (SPEC §4). The 202 is sent after the job is committed.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = JobSpec,
    params(SubmitQuery, ("Idempotency-Key" = Option<String>, Header, description = "Same key and body: the same job; same key, another body: 409")),
    responses(
        (status = 200, description = "The job ended within `wait`", body = JobResult),
        (status = 202, description = "Accepted and committed", body = Accepted),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 409, description = "Idempotency key reused with another body", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid spec: the field or unknown agent is named", body = ErrorBody),
        (status = 503, description = "Queue full; see Retry-After", body = ErrorBody),
    ))]
async fn submit_job(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let wait = match query.wait {
        None => None,
        Some(w) if w.is_finite() && w >= 0.0 => {
            Some(Duration::try_from_secs_f64(w).map_or(st.config.max_wait, |d| d.min(st.config.max_wait)))
        }
        Some(_) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "wait: a number of seconds >= 0")),
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "Idempotency-Key: 1-255 visible ASCII characters")
            })?;
            Some(k.to_owned())
        }
    };
    require_json(&headers)?;
    let body = read_body(body, &headers, &st.config).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "the body is not UTF-8"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {e}")))?;
    let spec = JobSpec::from_json(text)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec", e.to_string()))?;
    check_names(&st.svc.catalog(), &st.svc, &spec)?;
    let permit = st.svc.queue().reserve().ok_or(ServiceError::Overloaded(st.svc.queue().capacity()))?;
    let canonical = serde_json::to_string(&spec).map_err(ApiError::internal)?;
    let spec_hash = crate::hex(&Sha256::digest(canonical.as_bytes()));
    let id = format!("job_{}", uuid::Uuid::now_v7().simple());
    // Commit and queue in a task of its own: if the client goes away mid-request, a committed job is still
    // queued (and a refused one frees its place).
    let store = Arc::clone(st.svc.store());
    let new = NewJob {
        id: id.clone(),
        tenant: tenant.clone(),
        spec: canonical,
        spec_hash,
        goal: spec.goal.clone(),
        labels: spec.labels.clone(),
        idempotency_key: key,
        now_ms: super::now_ms(),
    };
    let queued = id.clone();
    let svc = Arc::clone(&st.svc);
    let (admission, watch) = tokio::spawn(async move {
        let admission = reply(store.create_job(new)).await;
        let mut watch = None;
        if let Ok(Admission::Created) = admission {
            // Nothing runs the job before it is queued, so subscribing here misses none of its stops (and a
            // refused or replayed submission leaves no channel behind).
            watch = wait.and_then(|_| svc.watch(&queued));
            permit.push(queued);
        }
        admission.map(|a| (a, watch))
    })
    .await
    .map_err(ApiError::internal)??;
    let (id, status, watch) = match admission {
        Admission::Created => {
            tracing::info!(job = %id, tenant = %tenant, "job accepted");
            (id, Status::Queued, watch)
        }
        Admission::Existing { id, status } => {
            let stoppable = matches!(status, Status::Queued | Status::Running);
            let watch = wait.filter(|_| stoppable).and_then(|_| st.svc.watch(&id));
            // Look again after subscribing: a stop committed before the subscription is never published to it.
            let status = if watch.is_some() { load_job(&st.svc, &tenant, &id).await?.status } else { status };
            (id, status, watch)
        }
        Admission::KeyConflict { id } => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!("the Idempotency-Key was used for job {id} with another body"),
            ));
        }
    };
    if let (Some(wait), Some(rx)) = (wait, watch)
        && matches!(status, Status::Queued | Status::Running)
    {
        wait_for_stop(rx, wait).await;
    }
    let record = load_job(&st.svc, &tenant, &id).await?;
    let mut resp = if wait.is_some() && record.status.is_terminal() {
        (StatusCode::OK, Json(current_result(&st.svc, &record))).into_response()
    } else {
        (StatusCode::ACCEPTED, Json(Accepted { id: id.clone(), status: record.status })).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Unknown agent or invariant names are the client's mistake: 422 naming the entry.
fn check_names(catalog: &Catalog, svc: &Service, spec: &JobSpec) -> Result<(), ApiError> {
    let (agents, invariants) = roster(catalog, &svc.sandbox, spec, "-");
    Job::new(spec, &agents, &invariants)
        .map(drop)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec", e.to_string()))
}

/// Wait until the job ends or waits for answers, or `limit` passes.
async fn wait_for_stop(mut rx: tokio::sync::broadcast::Receiver<Arc<Event>>, limit: Duration) {
    let _ = tokio::time::timeout(limit, async move {
        loop {
            match rx.recv().await {
                Ok(e) if e.kind == "end" || e.kind == "waiting" => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .await;
}

/// Query of `GET /v1/jobs`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs with this status.
    pub status: Option<String>,
    /// Only jobs with this label, `key=value`.
    pub label: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// List the tenant's jobs, newest first, with filters and a cursor.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_jobs(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<Status>(serde_json::Value::String(s.to_owned()))
                .map_err(|_| bad(format!("status: unknown status {s:?}")))?,
        ),
    };
    let label = match q.label.as_deref() {
        None => None,
        Some(l) => {
            let (k, v) = l.split_once('=').ok_or_else(|| bad("label: expected key=value".into()))?;
            Some((k.to_owned(), v.to_owned()))
        }
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit: 1 to 500".into()));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| bad("cursor: not a cursor from this API".into()))?,
        ),
    };
    let filter = ListFilter { status, label, before, limit: limit + 1 };
    let store = Arc::clone(st.svc.store());
    let mut jobs = blocking(move || store.list(Some(&tenant), &filter)).await?;
    let next_cursor = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| j.seq.to_string())
    } else {
        None
    };
    Ok(Json(JobPage { jobs, next_cursor }))
}

/// A job's result (SPEC §4), with its status at every stage.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobResult), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_job(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<JobResult>, ApiError> {
    let record = load_job(&st.svc, &tenant, &id).await?;
    Ok(Json(current_result(&st.svc, &record)))
}

/// One entry of a job's audit trail.
#[derive(Serialize, ToSchema)]
pub struct TraceEvent {
    /// Position in the trail, from 1.
    pub seq: u64,
    /// `created`, `started`, `cycle`, `answer`, `cancel_requested`, `waiting` or `end`.
    pub kind: String,
    /// Unix ms.
    pub at_ms: u64,
    /// The payload (a cycle's trace for `cycle`).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A job's audit trail.
#[derive(Serialize, ToSchema)]
pub struct JobTrace {
    /// The job id.
    pub id: String,
    /// Its status.
    pub status: Status,
    /// Times a worker started it (more than 1 after a restart, an answer or a cancel).
    pub attempts: u32,
    /// The components of its last start, name to SHA-256.
    pub components: BTreeMap<String, String>,
    /// Every cycle: each agent call with fuel, memory, time and outcome, and every merge decision.
    pub cycles: Vec<CycleTrace>,
    /// The whole trail, in order.
    pub events: Vec<TraceEvent>,
}

/// A job's trace: every cycle and every event.
#[utoipa::path(get, path = "/v1/jobs/{id}/trace", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobTrace), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_trace(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<JobTrace>, ApiError> {
    let record = load_job(&st.svc, &tenant, &id).await?;
    let store = Arc::clone(st.svc.store());
    let id2 = id.clone();
    let events = blocking(move || store.events(&id2, 0)).await?;
    let mut cycles = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let data: serde_json::Value = serde_json::from_str(&e.data).map_err(ApiError::internal)?;
        if e.kind == "cycle"
            && let Ok(t) = serde_json::from_value::<CycleTrace>(data.clone())
        {
            cycles.push(t);
        }
        out.push(TraceEvent { seq: e.seq, kind: e.kind, at_ms: e.at_ms, data });
    }
    let components = record.components.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    Ok(Json(JobTrace { id, status: record.status, attempts: record.attempts, components, cycles, events: out }))
}

/// Live events of a job as server-sent events: the trail so far, then each event as it commits (`cycle`,
/// `waiting`, `answer`, ..., and `end`, after which the stream closes). `Last-Event-ID` resumes.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "text/event-stream; `event` is the kind, `id` the sequence number, `data` JSON", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn job_events(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = load_job(&st.svc, &tenant, &id).await?;
    let after = headers.get("last-event-id").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
    let live = if record.status.is_terminal() { None } else { st.svc.watch(&id) };
    let store = Arc::clone(st.svc.store());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let mut last = after;
        let mut live = live;
        loop {
            let store2 = Arc::clone(&store);
            let id2 = id.clone();
            let Ok(Ok(history)) = tokio::task::spawn_blocking(move || store2.events(&id2, last)).await else { return };
            for e in history {
                last = e.seq;
                let end = e.kind == "end";
                if tx.send(Ok(sse(&e))).await.is_err() || end {
                    return;
                }
            }
            let Some(rx) = live.as_mut() else { return };
            loop {
                match rx.recv().await {
                    Ok(e) if e.seq <= last => {}
                    Ok(e) => {
                        last = e.seq;
                        let end = e.kind == "end";
                        if tx.send(Ok(sse(&e))).await.is_err() || end {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        live = None;
                        break;
                    }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

fn sse(e: &Event) -> SseEvent {
    SseEvent::default().event(e.kind.clone()).id(e.seq.to_string()).data(e.data.clone())
}

/// Body of `POST /v1/jobs/{id}/answers`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// The question id.
    pub question: String,
    /// The answer text; it becomes the fact `answers/<question>`.
    pub answer: String,
}

/// `POST /v1/jobs/{id}/answers` answer.
#[derive(Serialize, ToSchema)]
pub struct AnswerAccepted {
    /// The job id.
    pub id: String,
    /// The question answered.
    pub question: String,
    /// Whether the job had every answer and was queued to resume.
    pub resumed: bool,
}

/// Answer one open question of a job. Several questions are answered independently; the job resumes when it
/// waits and every question it asked has an answer.
#[utoipa::path(post, path = "/v1/jobs/{id}/answers", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    request_body = AnswerBody,
    responses((status = 202, body = AnswerAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "No such job, or the job never asked this question", body = ErrorBody),
        (status = 409, description = "Already answered, or the job has ended", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "A missing or unknown field, or an answer over max_fact_bytes", body = ErrorBody)))]
async fn answer(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AnswerAccepted>), ApiError> {
    require_json(&headers)?;
    let body = read_body(body, &headers, &st.config).await?;
    let AnswerBody { question, answer } = parse_json(&body)?;
    let record = load_job(&st.svc, &tenant, &id).await?;
    if let Ok(spec) = JobSpec::from_json(&record.spec)
        && answer.len() as u64 > spec.budget.max_fact_bytes
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("answer: {} bytes, more than budget.max_fact_bytes ({})", answer.len(), spec.budget.max_fact_bytes),
        ));
    }
    // Record and requeue in a task of its own, so a client that goes away cannot leave a resumable job unqueued.
    let svc = Arc::clone(&st.svc);
    let (t, j, q) = (tenant.clone(), id.clone(), question.clone());
    let outcome = tokio::spawn(async move {
        let outcome = reply(svc.store().answer(&t, &j, &q, &answer, super::now_ms())).await;
        if let Ok(AnswerOutcome::Recorded { resume: true }) = outcome {
            svc.requeue(j);
        }
        outcome
    })
    .await
    .map_err(ApiError::internal)??;
    match outcome {
        AnswerOutcome::Recorded { resume } => {
            Ok((StatusCode::ACCEPTED, Json(AnswerAccepted { id, question, resumed: resume })))
        }
        AnswerOutcome::UnknownJob => Err(ApiError::not_found(&format!("job {id}"))),
        AnswerOutcome::UnknownQuestion => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_question",
            format!("job {id} has not asked a question {question:?}"),
        )),
        AnswerOutcome::AlreadyAnswered => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_answered",
            format!("question {question:?} of job {id} is answered already"),
        )),
        AnswerOutcome::Finished(s) => {
            Err(ApiError::new(StatusCode::CONFLICT, "job_finished", format!("job {id} has ended with status {s}")))
        }
    }
}

/// `POST /v1/jobs/{id}/cancel` answer.
#[derive(Serialize, ToSchema)]
pub struct CancelAccepted {
    /// The job id.
    pub id: String,
    /// Its status when the cancel was recorded; it ends as `cancelled` shortly.
    pub status: Status,
    /// Always true.
    pub cancel_requested: bool,
}

/// Cancel a job. A queued job ends without running; a running one at its next cycle; a waiting one at once,
/// with the facts it had.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 202, body = CancelAccepted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The job has ended", body = ErrorBody)))]
async fn cancel(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<CancelAccepted>), ApiError> {
    check_id(&id)?;
    let svc = Arc::clone(&st.svc);
    let (t, j) = (tenant.clone(), id.clone());
    let outcome = tokio::spawn(async move {
        let outcome = reply(svc.store().cancel(&t, &j, super::now_ms())).await;
        if let Ok(CancelOutcome::Requested { requeue, .. }) = outcome {
            svc.interrupt(&j);
            if requeue {
                svc.requeue(j);
            }
        }
        outcome
    })
    .await
    .map_err(ApiError::internal)??;
    match outcome {
        CancelOutcome::Requested { status, .. } => {
            Ok((StatusCode::ACCEPTED, Json(CancelAccepted { id, status, cancel_requested: true })))
        }
        CancelOutcome::UnknownJob => Err(ApiError::not_found(&format!("job {id}"))),
        CancelOutcome::Finished(s) => {
            Err(ApiError::new(StatusCode::CONFLICT, "job_finished", format!("job {id} has ended with status {s}")))
        }
    }
}

// ---- agents, operations ----

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

impl From<&Catalog> for AgentsView {
    fn from(c: &Catalog) -> Self {
        Self {
            agents: c
                .agents()
                .map(|(l, i)| AgentView {
                    name: l.name.clone(),
                    file: l.file.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    reads: i.reads.clone(),
                    writes: i.writes.clone(),
                    tools: i.tools.clone(),
                    required: i.required,
                    description: i.description.clone(),
                })
                .collect(),
            invariants: c
                .invariants()
                .map(|(l, i)| InvariantView {
                    name: l.name.clone(),
                    file: l.file.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    class: serde_json::to_value(i.class)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    description: i.description.clone(),
                })
                .collect(),
            rejected: c
                .rejected
                .iter()
                .map(|r| RejectedView { file: r.file.clone(), name: r.name.clone(), reason: r.reason.clone() })
                .collect(),
        }
    }
}

/// The components loaded now (the directory is rescanned first).
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses((status = 200, body = AgentsView), (status = 401, body = ErrorBody)))]
async fn list_agents(State(st): State<AppState>, Tenant(_): Tenant) -> Result<Json<AgentsView>, ApiError> {
    let svc = Arc::clone(&st.svc);
    let catalog = tokio::task::spawn_blocking(move || svc.rescan()).await.map_err(ApiError::internal)?;
    Ok(Json(AgentsView::from(catalog.as_ref())))
}

/// Liveness.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// Whether the service can take jobs.
    pub ready: bool,
    /// The store answers.
    pub store: bool,
    /// Agents loaded.
    pub agents: usize,
}

/// Readiness: the store answers and at least one agent is loaded (503 otherwise).
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, body = Ready), (status = 503, body = Ready)))]
async fn ready(State(st): State<AppState>) -> (StatusCode, Json<Ready>) {
    let store = Arc::clone(st.svc.store());
    let store_ok = matches!(tokio::task::spawn_blocking(move || store.ping()).await, Ok(Ok(())));
    let agents = st.svc.catalog().agents().count();
    let ok = store_ok && agents > 0 && !st.svc.queue().is_closed();
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(Ready { ready: ok, store: store_ok, agents }))
}

/// Prometheus metrics: jobs by status, job duration, agent calls by outcome, fuel by agent, queue depth,
/// running jobs.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics(State(st): State<AppState>) -> Response {
    let store = Arc::clone(st.svc.store());
    let counts =
        tokio::task::spawn_blocking(move || store.counts()).await.ok().and_then(Result::ok).unwrap_or_default();
    let svc = &st.svc;
    let text =
        svc.metrics().render(&counts, svc.queue().len(), svc.queue().capacity(), svc.running(), svc.config().workers);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The slowest agent by mean call time.
#[derive(Serialize, ToSchema)]
pub struct SlowAgent {
    /// Its name.
    pub name: String,
    /// Mean wall time per call, µs.
    pub mean_call_us: u64,
}

/// The status report.
#[derive(Serialize, ToSchema)]
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

/// A status report for operators.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, body = StatusReport), (status = 401, body = ErrorBody)))]
async fn status(State(st): State<AppState>, Tenant(_): Tenant) -> Json<StatusReport> {
    let svc = &st.svc;
    let store = Arc::clone(svc.store());
    let store_ok = matches!(tokio::task::spawn_blocking(move || store.ping()).await, Ok(Ok(())));
    let catalog = svc.catalog();
    let (depth, capacity) = (svc.queue().len(), svc.queue().capacity());
    let oldest = svc.queue().oldest_wait().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let agents = catalog.agents().count();
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
    if !catalog.rejected.is_empty() {
        degraded.push(format!("{} component(s) rejected; see /v1/agents", catalog.rejected.len()));
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
    let running = svc.running();
    let workers = svc.config().workers;
    #[allow(clippy::cast_precision_loss)]
    let utilization = if workers == 0 { 0.0 } else { running as f64 / workers as f64 };
    critical.extend(degraded);
    Json(StatusReport {
        status: status.into(),
        reasons: critical,
        queue_depth: depth,
        queue_capacity: capacity,
        oldest_queued_ms: oldest,
        running,
        workers,
        utilization,
        slowest_agent: svc.metrics().slowest_agent().map(|(name, mean_call_us)| SlowAgent { name, mean_call_us }),
        agents,
        rejected: catalog.rejected.len(),
        jobs_finished: svc.metrics().finished_total(),
        uptime_s: svc.uptime().as_secs(),
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
async fn openapi(State(st): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], st.openapi.as_str().to_owned()).into_response()
}

async fn fallback() -> ApiError {
    ApiError::not_found("such route")
}

/// Give every error response without a JSON body (405 from the router, 431 from hyper...) the SPEC error shape.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let kind = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut out = ApiError::new(status, kind, message).into_response();
    if let Some(allow) = resp.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Converge", description = "Sandboxed WebAssembly agents that converge on a shared context (SPEC §5)."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "jobs"), (name = "agents"), (name = "tools"), (name = "operations"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and the OpenAPI document built from them.
fn routes() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(submit_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(get_trace))
        .routes(routes!(job_events))
        .routes(routes!(answer))
        .routes(routes!(cancel))
        .routes(routes!(list_agents))
        .routes(routes!(super::http_tools::validate_tool))
        .routes(routes!(super::http_tools::list_tools))
        .routes(routes!(super::http_tools::get_tool))
        .routes(routes!(super::http_tools::review_tool))
        .routes(routes!(status))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .split_for_parts()
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    routes().1.to_pretty_json().unwrap_or_default()
}

/// The whole HTTP application.
pub fn router(svc: Arc<Service>, auth: Auth, config: HttpConfig) -> axum::Router {
    let (router, api) = routes();
    let state = AppState {
        svc,
        auth: Arc::new(auth),
        openapi: Arc::new(api.to_pretty_json().unwrap_or_default()),
        validations: Arc::new(tokio::sync::Semaphore::new(1)),
        validation_slots: Arc::new(tokio::sync::Semaphore::new(config.validations_waiting.saturating_add(1))),
        config: Arc::new(config),
    };
    router.fallback(fallback).layer(axum::middleware::map_response(json_errors)).with_state(state)
}
