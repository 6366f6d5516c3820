//! The one error of the HTTP layer: a status, a stable `kind`, a sentence, and `Retry-After` when the client
//! should come back. Every error leaves as `{"error": {"kind", "message"}}`; the cause of a 5xx goes to the log,
//! not to the client. A client's mistake is never a 5xx.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use converge_service::ServiceError;
use serde::Serialize;
use utoipa::ToSchema;

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
    /// An error of `status` and `kind`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), retry_after: None }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 `invalid_request`.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    /// 503 `overloaded`, with `Retry-After`.
    pub fn overloaded(message: impl Into<String>, retry_after: u64) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
        err.retry_after = Some(retry_after);
        err
    }

    /// 500 `internal`: the cause is logged, the client gets a sentence.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the service failed; the request was not applied")
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::InvalidSpec(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec", message),
            ServiceError::Invalid(_) => Self::unprocessable(message),
            ServiceError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            ServiceError::UnknownQuestion { .. } => Self::new(StatusCode::CONFLICT, "unknown_question", message),
            ServiceError::AlreadyAnswered { .. } => Self::new(StatusCode::CONFLICT, "already_answered", message),
            ServiceError::Finished { .. } => Self::new(StatusCode::CONFLICT, "job_finished", message),
            ServiceError::IdempotencyConflict { .. } => {
                Self::new(StatusCode::CONFLICT, "idempotency_conflict", message)
            }
            ServiceError::NotPending { .. } => Self::new(StatusCode::CONFLICT, "not_pending", message),
            ServiceError::Overloaded { retry_after, .. } => Self::overloaded(message, retry_after),
            ServiceError::ShuttingDown => Self::overloaded(message, 1),
            ServiceError::Store(cause) => {
                tracing::error!(error = %cause, "store error");
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; retry later",
                );
                err.retry_after = Some(1);
                err
            }
            ServiceError::Internal(cause) => Self::internal(cause),
            _ => Self::internal(message),
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

/// Give every error response without a JSON body (405 from the router, 431 from hyper...) the SPEC error shape.
pub(crate) async fn json_errors(resp: Response) -> Response {
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

/// The answer to a route that does not exist.
pub(crate) async fn fallback() -> ApiError {
    ApiError::not_found("such route")
}
