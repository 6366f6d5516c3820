//! `/v1/jobs`: submit (SPEC §4), list, read, trace, follow live (server-sent events), answer, cancel.

use crate::AppState;
use crate::auth::Tenant;
use crate::body::{json_text, parse_json, read_body, require_json};
use crate::error::{ApiError, ErrorBody};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use converge_engine::{CycleTrace, JobResult, JobSpec, Status};
use converge_service::Submitted;
use converge_store::{Event, EventKind, JobSummary, ListFilter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;

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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubmitQuery {
    /// Wait up to this many seconds for the job to end; 200 with the result if it does, else 202.
    pub wait: Option<f64>,
}

/// Submit a job (SPEC §4). The 202 is sent after the job is committed.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = JobSpec,
    params(SubmitQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Same key and body: the same job; same key, another body: 409"),
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context: every run of the job is traced as its child, on whichever worker or replica runs it. A value that is not one is ignored (a new trace starts), as the W3C recommendation says.")),
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
pub(crate) async fn submit_job(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let wait = match query.wait {
        None => None,
        Some(w) if w.is_finite() && w >= 0.0 => Some(Duration::try_from_secs_f64(w).unwrap_or(Duration::MAX)),
        Some(_) => return Err(ApiError::bad_request("wait: a number of seconds >= 0")),
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key: 1-255 visible ASCII characters"))?;
            converge_service::check_idempotency_key(k).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Some(k.to_owned())
        }
    };
    require_json(&headers)?;
    let body = read_body(body, &headers, st.config.max_body, st.config.body_timeout).await?;
    let spec = JobSpec::from_json(json_text(&body)?)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec", e.to_string()))?;
    // One valid `traceparent` continues the client's trace; none, several or a bad one start a new trace.
    let mut traceparents = headers.get_all("traceparent").iter();
    let traceparent = match (traceparents.next(), traceparents.next()) {
        (Some(v), None) => v.to_str().ok().and_then(converge_service::trace_parent),
        _ => None,
    };
    let submitted = st.svc.submit_traced(&tenant, spec, key, wait, traceparent).await?;
    let id = submitted.id().to_owned();
    let mut resp = match submitted {
        // The stored result's bytes as they are.
        Submitted::Ended { json, .. } => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
        }
        Submitted::Accepted { id, status } => (StatusCode::ACCEPTED, Json(Accepted { id, status })).into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Query of `GET /v1/jobs`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
pub(crate) async fn list_jobs(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<Status>(serde_json::Value::String(s.to_owned()))
                .map_err(|_| ApiError::bad_request(format!("status: unknown status {s:?}")))?,
        ),
    };
    let label = match q.label.as_deref() {
        None => None,
        Some(l) => {
            let (k, v) = l.split_once('=').ok_or_else(|| ApiError::bad_request("label: expected key=value"))?;
            Some((k.to_owned(), v.to_owned()))
        }
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 500"));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::bad_request("cursor: not a cursor from this API"))?,
        ),
    };
    let filter = ListFilter { status, label, before, limit: limit + 1 };
    let mut jobs = st.svc.list(&tenant, filter).await?;
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
pub(crate) async fn get_job(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<JobResult>, ApiError> {
    Ok(Json(st.svc.result(&tenant, &id).await?))
}

/// One entry of a job's audit trail.
#[derive(Serialize, ToSchema)]
pub struct TraceEvent {
    /// Position in the trail, from 1.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
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
pub(crate) async fn get_trace(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<JobTrace>, ApiError> {
    let (record, events) = st.svc.trail(&tenant, &id).await?;
    let mut cycles = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let data: serde_json::Value = serde_json::from_str(&e.data).map_err(ApiError::internal)?;
        if e.kind == EventKind::Cycle
            && let Ok(t) = serde_json::from_value::<CycleTrace>(data.clone())
        {
            cycles.push(t);
        }
        out.push(TraceEvent { seq: e.seq, kind: e.kind, at_ms: e.at_ms, data });
    }
    Ok(Json(JobTrace {
        id,
        status: record.status,
        attempts: record.attempts,
        components: record.components,
        cycles,
        events: out,
    }))
}

/// Live events of a job as server-sent events: the trail so far, then each event as it commits (`cycle`,
/// `waiting`, `answer`, ..., and `end`, after which the stream closes). `Last-Event-ID` resumes.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "text/event-stream; `event` is the kind, `id` the sequence number, `data` JSON", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn job_events(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = headers.get("last-event-id").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
    let events = st.svc.follow(&tenant, &id, after).await?;
    let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(events), |e| {
        Ok::<_, std::convert::Infallible>(sse(&e))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

fn sse(e: &Event) -> SseEvent {
    SseEvent::default().event(e.kind.as_str()).id(e.seq.to_string()).data(e.data.clone())
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
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has not asked this question (`unknown_question`), it is answered already, or the job has ended", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "A missing or unknown field, or an answer over max_fact_bytes", body = ErrorBody)))]
pub(crate) async fn answer(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AnswerAccepted>), ApiError> {
    require_json(&headers)?;
    let body = read_body(body, &headers, st.config.max_body, st.config.body_timeout).await?;
    let AnswerBody { question, answer } = parse_json(&body)?;
    let resumed = st.svc.answer(&tenant, &id, &question, answer).await?;
    Ok((StatusCode::ACCEPTED, Json(AnswerAccepted { id, question, resumed })))
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
pub(crate) async fn cancel(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<CancelAccepted>), ApiError> {
    let status = st.svc.cancel(&tenant, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(CancelAccepted { id, status, cancel_requested: true })))
}
