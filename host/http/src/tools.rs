//! `/v1/tools`: validate an untrusted tool, list tools with their verdicts, show one with its history, record a
//! review (SPEC §6).

use crate::AppState;
use crate::auth::Tenant;
use crate::body::{parse_json, read_body, require_json};
use crate::error::{ApiError, ErrorBody};
use crate::ops::RejectedView;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use converge_engine::names::clip;
use converge_service::{ToolDetail as Detail, TrustedTool};
use converge_store::tool::MAX_TOOL_BYTES;
use converge_store::{
    Decision, Manifest, Report, ReviewRecord, ToolEvent, ToolLimits, ToolRecord, ToolStatus, Verdict,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The header that carries the manifest when the body is the raw component.
pub const MANIFEST_HEADER: &str = "converge-manifest";
/// Largest validation body: the component cap plus room for a manifest and multipart framing.
const MAX_VALIDATE_BODY: usize = MAX_TOOL_BYTES + 1024 * 1024;

fn manifest(bytes: &[u8]) -> Result<Manifest, ApiError> {
    Manifest::parse(bytes).map_err(|e| ApiError::unprocessable(e.to_string()))
}

/// The component and the manifest of a request: multipart (`manifest` and `component` parts), or the raw
/// component with the manifest in the `Converge-Manifest` header.
async fn submission(headers: &HeaderMap, body: bytes::Bytes) -> Result<(bytes::Bytes, Manifest), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(content_type)
                .map_err(|e| ApiError::bad_request(format!("Content-Type: {e}")))?;
            let stream = tokio_stream::once(Ok::<_, std::convert::Infallible>(body));
            let mut parts = multer::Multipart::new(stream, boundary);
            let (mut component, mut manifest_bytes) = (None, None);
            let bad = |e: multer::Error| ApiError::bad_request(format!("multipart: {e}"));
            while let Some(field) = parts.next_field().await.map_err(bad)? {
                let name = field.name().unwrap_or("").to_owned();
                let bytes = field.bytes().await.map_err(bad)?;
                match name.as_str() {
                    "component" if component.is_none() => component = Some(bytes),
                    "manifest" if manifest_bytes.is_none() => manifest_bytes = Some(bytes),
                    "component" | "manifest" => {
                        return Err(ApiError::unprocessable(format!("the part {name} appears twice")));
                    }
                    other => {
                        return Err(ApiError::unprocessable(format!(
                            "unknown part {:?}; expected `manifest` and `component`",
                            clip(other, 64)
                        )));
                    }
                }
            }
            let component = component.ok_or_else(|| ApiError::unprocessable("the part `component` is missing"))?;
            let manifest_bytes =
                manifest_bytes.ok_or_else(|| ApiError::unprocessable("the part `manifest` is missing"))?;
            Ok((component, manifest(&manifest_bytes)?))
        }
        "application/wasm" | "application/octet-stream" => {
            let text = headers.get(MANIFEST_HEADER).ok_or_else(|| {
                ApiError::unprocessable("the Converge-Manifest header is missing (or send multipart/form-data)")
            })?;
            Ok((body, manifest(text.as_bytes())?))
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be multipart/form-data (parts manifest and component) or application/wasm with a \
                 Converge-Manifest header, not {:?}",
                clip(content_type, 128)
            ),
        )),
    }
}

/// What `POST /v1/tools/validate` answers: the report of this run of the pipeline, and where the tool stands.
#[derive(Serialize, ToSchema)]
pub struct Validation {
    /// The report (SPEC §6).
    #[serde(flatten)]
    pub report: Report,
    /// The stored status: the verdict, unless a reviewer decided on this component before (`accepted` after an
    /// approval, `rejected`, `revoked`).
    pub status: ToolStatus,
    /// Whether the submitter's jobs can call it now.
    pub callable: bool,
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
pub(crate) async fn validate_tool(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Validation>, ApiError> {
    // A place in the line before the body is read: waiting submissions hold their bodies in memory.
    let ticket = st.svc.validation_ticket()?;
    let body = read_body(body, &headers, MAX_VALIDATE_BODY, st.config.body_timeout).await?;
    let (component, manifest) = submission(&headers, body).await?;
    let v = st.svc.validate(ticket, &tenant, component.to_vec(), manifest).await?;
    Ok(Json(Validation { report: v.report, status: v.record.status, callable: v.callable }))
}

/// Where a tool came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The operator's tools directory.
    Trusted,
    /// Submitted, validated, and accepted or approved.
    Validated,
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
    pub status: ToolStatus,
    /// What the validation pipeline said (validated tools).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
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
    ToolView {
        id: record.digest.clone(),
        name: record.name.clone(),
        description: record.report.description.clone(),
        source: Source::Validated,
        status: record.status,
        verdict: Some(record.verdict),
        callable,
        limits: record.report.limits,
        tenant: Some(record.tenant.clone()),
        created_ms: Some(record.created_ms),
        reviews: record.reviews.clone(),
        reasons: record.report.reasons.clone(),
    }
}

fn trusted_view(t: &TrustedTool) -> ToolView {
    ToolView {
        id: t.digest.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        source: Source::Trusted,
        status: ToolStatus::Accepted,
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

/// One of the caller's submitted tools, or a trusted tool, with its history: every submission (verdict,
/// reasons, the manifest's SHA-256, what it changed) and every review. Another tenant's tool is 404.
#[utoipa::path(get, path = "/v1/tools/{id}", tag = "tools",
    params(("id" = String, Path, description = "The tool's digest")),
    responses(
        (status = 200, description = "The tool and its history", body = ToolDetail),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "No such tool of this tenant", body = ErrorBody),
    ))]
pub(crate) async fn get_tool(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<ToolDetail>, ApiError> {
    Ok(Json(match st.svc.tool(&tenant, &id).await? {
        Detail::Submitted(record, callable, history) => ToolDetail { tool: view(&record, callable), history },
        Detail::Trusted(t) => ToolDetail { tool: trusted_view(&t), history: Vec::new() },
    }))
}

/// List the trusted tools and the caller's own submitted tools, with their verdicts and status. Another
/// tenant's submissions are neither listed nor callable by this tenant's jobs.
#[utoipa::path(get, path = "/v1/tools", tag = "tools",
    responses(
        (status = 200, description = "Every tool", body = ToolsView),
        (status = 401, description = "No or bad token", body = ErrorBody),
    ))]
pub(crate) async fn list_tools(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<ToolsView>, ApiError> {
    let listing = st.svc.tools(&tenant).await?;
    let mut tools: Vec<ToolView> = listing.trusted.iter().map(trusted_view).collect();
    tools.extend(listing.submitted.iter().map(|(r, callable)| view(r, *callable)));
    let rejected_files = st.svc.inventory().rejected_tools.iter().map(RejectedView::from).collect();
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
pub(crate) async fn review_tool(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ToolView>, ApiError> {
    // An id that names no tool is 404 whatever the body says.
    converge_service::check_tool_id(&id)?;
    require_json(&headers)?;
    let body = read_body(body, &headers, st.config.max_body, st.config.body_timeout).await?;
    let ReviewBody { decision, reviewer, comment } = parse_json(&body)?;
    let (record, callable) = st.svc.review(&tenant, &id, decision, reviewer, comment).await?;
    Ok(Json(view(&record, callable)))
}
