//! `/v1/tools`: validate an untrusted tool, list tools with their verdicts, record a review (SPEC §6).

use super::http::{ApiError, AppState, ErrorBody, RejectedView, Tenant, blocking, parse_json, read_body, reply};
use crate::store::{ReviewOutcome, ReviewRecord, ToolEvent, ToolRecord};
use crate::tools::validate::{MAX_TOOL_BYTES, Manifest, Report};
use crate::tools::{Source, Tool, ToolLimits};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// The header that carries the manifest when the body is the raw component.
pub const MANIFEST_HEADER: &str = "converge-manifest";
/// Largest validation body: the component cap plus room for a manifest and multipart framing.
const MAX_VALIDATE_BODY: usize = MAX_TOOL_BYTES + 1024 * 1024;

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

fn manifest(bytes: &[u8]) -> Result<Manifest, ApiError> {
    Manifest::parse(bytes).map_err(|e| unprocessable(e.to_string()))
}

/// The component and the manifest of a request: multipart (`manifest` and `component` parts), or the raw
/// component with the manifest in the `Converge-Manifest` header.
async fn submission(headers: &HeaderMap, body: bytes::Bytes) -> Result<(bytes::Bytes, Manifest), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(content_type)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("Content-Type: {e}")))?;
            let stream = tokio_stream::once(Ok::<_, std::convert::Infallible>(body));
            let mut parts = multer::Multipart::new(stream, boundary);
            let (mut component, mut manifest_bytes) = (None, None);
            let bad =
                |e: multer::Error| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("multipart: {e}"));
            while let Some(field) = parts.next_field().await.map_err(bad)? {
                let name = field.name().unwrap_or("").to_owned();
                let bytes = field.bytes().await.map_err(bad)?;
                match name.as_str() {
                    "component" if component.is_none() => component = Some(bytes),
                    "manifest" if manifest_bytes.is_none() => manifest_bytes = Some(bytes),
                    "component" | "manifest" => return Err(unprocessable(format!("the part {name} appears twice"))),
                    other => {
                        return Err(unprocessable(format!(
                            "unknown part {:?}; expected `manifest` and `component`",
                            crate::sandbox::clip(other, 64)
                        )));
                    }
                }
            }
            let component = component.ok_or_else(|| unprocessable("the part `component` is missing"))?;
            let manifest = manifest(&manifest_bytes.ok_or_else(|| unprocessable("the part `manifest` is missing"))?)?;
            Ok((component, manifest))
        }
        "application/wasm" | "application/octet-stream" => {
            let text = headers.get(MANIFEST_HEADER).ok_or_else(|| {
                unprocessable("the Converge-Manifest header is missing (or send multipart/form-data)")
            })?;
            Ok((body, manifest(text.as_bytes())?))
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be multipart/form-data (parts manifest and component) or application/wasm with a \
                 Converge-Manifest header, not {:?}",
                crate::sandbox::clip(content_type, 128)
            ),
        )),
    }
}

/// Validate an untrusted tool (SPEC §6): the component as raw bytes (`application/wasm`, manifest in the
/// `Converge-Manifest` header) or `multipart/form-data` with parts `manifest` and `component`. Answers 200 with
/// the report whatever the verdict, with the tool's stored `status` (which an earlier review decides, for a
/// component submitted before) and whether it is `callable`; an accepted tool is callable when the answer
/// arrives.
#[utoipa::path(post, path = "/v1/tools/validate", tag = "tools",
    request_body(content = Vec<u8>, description = "The component (application/wasm) or multipart/form-data", content_type = "application/wasm"),
    params(("Converge-Manifest" = Option<String>, Header, description = "The manifest JSON, with a raw component body")),
    responses(
        (status = 200, description = "The validation report, with the stored status", body = Validation),
        (status = 400, description = "Malformed multipart body", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Neither multipart nor application/wasm", body = ErrorBody),
        (status = 503, description = "Too many validations running or waiting (`Retry-After`)", body = ErrorBody),
        (status = 422, description = "Missing part or invalid manifest, the field named", body = ErrorBody),
    ))]
pub(super) async fn validate_tool(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Validation>, ApiError> {
    // A place in the line before the body is read: waiting submissions hold their bodies in memory.
    let _slot = Arc::clone(&st.validation_slots).try_acquire_owned().map_err(|_| {
        ApiError::overloaded(
            format!(
                "the line of tool validations is full ({} running or waiting); retry later",
                st.config.validations_waiting.saturating_add(1)
            ),
            st.config.retry_after.max(5),
        )
    })?;
    let mut config = (*st.config).clone();
    config.max_body = MAX_VALIDATE_BODY;
    let body = read_body(body, &headers, &config).await?;
    let (component, manifest) = submission(&headers, body).await?;
    // One validation at a time: each compiles and runs tests on the same cores the jobs use.
    let _permit = st.validations.acquire().await.map_err(ApiError::internal)?;
    let svc = Arc::clone(&st.svc);
    let (report, record) = blocking(move || svc.validate_tool(&tenant, &component, &manifest)).await?;
    tracing::info!(tool = %record.name, digest = %record.digest, verdict = report.verdict.as_str(),
        status = %record.status, "tool validated");
    let callable = st.svc.catalog().tools.for_tenant(&record.tenant).resolve(&pinned(&record)).is_some();
    Ok(Json(Validation { report, status: record.status, callable }))
}

/// What `POST /v1/tools/validate` answers: the report of this run of the pipeline, and where the tool stands.
#[derive(Serialize, ToSchema)]
pub struct Validation {
    /// The report (SPEC §6).
    #[serde(flatten)]
    pub report: Report,
    /// The stored status: the verdict, unless a reviewer decided on this component before (`accepted` after an
    /// approval, `rejected`, `revoked`).
    pub status: String,
    /// Whether the submitter's jobs can call it now.
    pub callable: bool,
}

/// `name@digest`: how a stored tool resolves exactly.
fn pinned(record: &ToolRecord) -> String {
    format!("{}@{}", record.name, record.digest)
}

/// A tool as `GET /v1/tools` lists it.
#[derive(Serialize, ToSchema)]
pub struct ToolView {
    /// SHA-256 of the component: the id of the review endpoint, and the `@digest` of a pinned call.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// `trusted` (tools directory) or `validated` (submitted).
    pub source: Source,
    /// `accepted` (callable), `needs_review`, `rejected`, or `revoked` (was accepted; a reviewer withdrew it).
    pub status: String,
    /// What the validation pipeline said (validated tools).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Whether agents can call it now (by `name`, when it is the one the name resolves to, or by `name@id`).
    pub callable: bool,
    /// Limits of each invocation.
    pub limits: ToolLimits,
    /// Who submitted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When it was stored, in ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<u64>,
    /// Reviews, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reviews: Vec<ReviewRecord>,
    /// The validation report's reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The tools a tenant sees: the trusted directory's, then the ones it submitted, in submission order.
#[derive(Serialize, ToSchema)]
pub struct ToolsView {
    /// The tools.
    pub tools: Vec<ToolView>,
    /// Files of the tools directory that did not load.
    pub rejected_files: Vec<RejectedView>,
}

fn view(record: &ToolRecord, callable: bool) -> ToolView {
    let report: Option<Report> = serde_json::from_str(&record.report).ok();
    ToolView {
        id: record.digest.clone(),
        name: record.name.clone(),
        description: report.as_ref().map(|r| r.description.clone()).unwrap_or_default(),
        source: Source::Validated,
        status: record.status.clone(),
        verdict: Some(record.verdict.clone()),
        callable,
        limits: report.as_ref().map(|r| r.limits).unwrap_or_default(),
        tenant: Some(record.tenant.clone()),
        created_ms: Some(record.created_ms),
        reviews: record.reviews.clone(),
        reasons: report.map(|r| r.reasons).unwrap_or_default(),
    }
}

fn trusted_view(t: &Tool) -> ToolView {
    ToolView {
        id: t.digest.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        source: Source::Trusted,
        status: "accepted".into(),
        verdict: None,
        callable: true,
        limits: t.limits,
        tenant: None,
        created_ms: None,
        reviews: Vec::new(),
        reasons: Vec::new(),
    }
}

/// One tool and its history.
#[derive(Serialize, ToSchema)]
pub struct ToolDetail {
    /// The tool, as the list shows it.
    #[serde(flatten)]
    pub tool: ToolView,
    /// Every submission of it and every review, oldest first (empty for a trusted tool).
    pub history: Vec<ToolEvent>,
}

/// A tool id is a SHA-256 digest: anything else is no tool (404, not 400: it names nothing).
fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(ApiError::not_found(&format!("tool {} (an id is a SHA-256 digest)", crate::sandbox::clip(id, 80))))
    }
}

/// One of the caller's submitted tools, or a trusted tool, with its history: every submission (verdict,
/// reasons, the manifest's SHA-256, what it changed) and every review. Another tenant's tool is 404.
#[utoipa::path(get, path = "/v1/tools/{id}", tag = "tools",
    params(("id" = String, Path, description = "The tool's digest")),
    responses(
        (status = 200, description = "The tool and its history", body = ToolDetail),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "No such tool of this tenant", body = ErrorBody),
    ))]
pub(super) async fn get_tool(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<ToolDetail>, ApiError> {
    check_id(&id)?;
    let store = Arc::clone(st.svc.store());
    let (owner, digest) = (tenant.clone(), id.clone());
    let (record, history) =
        blocking(move || Ok((store.tool(&owner, &digest)?, store.tool_history(&owner, &digest)?))).await?;
    let catalog = st.svc.catalog();
    if let Some(record) = record {
        let callable = catalog.tools.for_tenant(&tenant).resolve(&pinned(&record)).is_some();
        return Ok(Json(ToolDetail { tool: view(&record, callable), history }));
    }
    match catalog.tools.iter().find(|t| t.source == Source::Trusted && t.digest == id) {
        Some(t) => Ok(Json(ToolDetail { tool: trusted_view(t), history: Vec::new() })),
        None => Err(ApiError::not_found(&format!("tool {id}"))),
    }
}

/// List the trusted tools and the caller's own submitted tools, with their verdicts and status. Another
/// tenant's submissions are neither listed nor callable by this tenant's jobs.
#[utoipa::path(get, path = "/v1/tools", tag = "tools",
    responses(
        (status = 200, description = "Every tool", body = ToolsView),
        (status = 401, description = "No or bad token", body = ErrorBody),
    ))]
pub(super) async fn list_tools(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<ToolsView>, ApiError> {
    let store = Arc::clone(st.svc.store());
    let owner = tenant.clone();
    let records = blocking(move || store.tools(Some(&owner))).await?;
    let catalog = st.svc.catalog();
    let own = catalog.tools.for_tenant(&tenant);
    let mut tools: Vec<ToolView> =
        catalog.tools.iter().filter(|t| t.source == Source::Trusted).map(|t| trusted_view(t)).collect();
    for r in &records {
        let callable = own.resolve(&pinned(r)).is_some();
        tools.push(view(r, callable));
    }
    let rejected_files = catalog
        .rejected_tools
        .iter()
        .map(|r| RejectedView { file: r.file.clone(), name: r.name.clone(), reason: r.reason.clone() })
        .collect();
    Ok(Json(ToolsView { tools, rejected_files }))
}

/// A human decision on a tool that needs review.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// `approve` (the tool becomes callable) or `reject`, for a tool that needs review; `revoke`, for an accepted
    /// one.
    pub decision: Decision,
    /// Who decides (1 to 128 bytes).
    pub reviewer: String,
    /// Why (up to 4096 bytes).
    #[serde(default)]
    pub comment: String,
}

/// A review's decision.
#[derive(Deserialize, Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Make the tool callable.
    Approve,
    /// Never make it callable.
    Reject,
    /// Withdraw an accepted tool: jobs started from then on cannot call it (its bytes and record stay, for the
    /// audit and for replaying the jobs that called it).
    Revoke,
}

/// Record a human decision on one of the caller's own submitted tools: `approve` or `reject` one that needs
/// review, or `revoke` one that is accepted. The decision enters the tool's audit trail. Another tenant's tool
/// is 404.
#[utoipa::path(post, path = "/v1/tools/{id}/review", tag = "tools",
    params(("id" = String, Path, description = "The tool's digest")),
    request_body = ReviewBody,
    responses(
        (status = 200, description = "Recorded; the tool as it is now", body = ToolView),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "No such tool of this tenant", body = ErrorBody),
        (status = 409, description = "The decision does not apply to the tool's status", body = ErrorBody),
        (status = 422, description = "Invalid body, the field named", body = ErrorBody),
    ))]
pub(super) async fn review_tool(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ToolView>, ApiError> {
    check_id(&id)?;
    super::http::require_json(&headers)?;
    let body = read_body(body, &headers, &st.config).await?;
    let ReviewBody { decision, reviewer, comment } = parse_json(&body)?;
    if reviewer.trim().is_empty() || reviewer.len() > 128 {
        return Err(unprocessable("reviewer: 1 to 128 bytes naming who decides"));
    }
    if comment.len() > 4096 {
        return Err(unprocessable("comment: at most 4096 bytes"));
    }
    let review = ReviewRecord {
        decision: match decision {
            Decision::Approve => "approve".into(),
            Decision::Reject => "reject".into(),
            Decision::Revoke => "revoke".into(),
        },
        reviewer,
        comment,
        tenant: tenant.clone(),
        at_ms: crate::service::now_ms(),
    };
    let svc = Arc::clone(&st.svc);
    let digest = id.clone();
    // Record and apply in a task of its own: an approval the store committed is applied even if the client
    // goes away.
    let outcome = tokio::spawn(async move {
        let outcome = reply(svc.store().review_tool(&tenant, &digest, review)).await?;
        if let ReviewOutcome::Recorded(record) = &outcome {
            let (svc, record) = (Arc::clone(&svc), record.clone());
            tokio::task::spawn_blocking(move || svc.sync_tool(&record)).await.map_err(ApiError::internal)?;
        }
        Ok::<_, ApiError>(outcome)
    })
    .await
    .map_err(ApiError::internal)??;
    match outcome {
        ReviewOutcome::Recorded(record) => {
            tracing::info!(tool = %record.name, digest = %record.digest, status = %record.status, "tool reviewed");
            let tools = st.svc.catalog().tools.for_tenant(&record.tenant);
            let callable = tools.resolve(&pinned(&record)).is_some();
            Ok(Json(view(&record, callable)))
        }
        ReviewOutcome::UnknownTool => Err(ApiError::not_found(&format!("tool {id}"))),
        ReviewOutcome::NotPending(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_pending",
            match decision {
                Decision::Revoke => format!("tool {id} is {status}; only an accepted tool can be revoked"),
                _ => format!("tool {id} is {status}; only a tool that needs review can be approved or rejected"),
            },
        )),
    }
}
