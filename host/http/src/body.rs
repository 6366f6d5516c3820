//! Request bodies: read whole under a size limit and a time limit, typed by `Content-Type`, parsed so that a
//! syntax error is a 400 and a well-formed body with a wrong field a 422 naming the field.

use crate::error::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use std::time::Duration;

/// Read a whole request body of at most `max` bytes within `timeout`.
///
/// # Errors
/// 413 over the limit (by `Content-Length` or as it arrives), 408 past the time, 400 if the stream breaks.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {max} bytes"),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", "the body did not arrive in time")),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(format!("reading the body: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// A body that is JSON, or has no `Content-Type` at all.
///
/// # Errors
/// 415 for any other media type.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
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

/// The body as UTF-8 JSON text.
///
/// # Errors
/// 400 `invalid_json`: not UTF-8, or not JSON.
pub(crate) fn json_text(body: &[u8]) -> Result<&str, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "the body is not UTF-8"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {e}")))?;
    Ok(text)
}

/// Parse JSON text into `T`: a syntax error is a 400, a well-formed body with a wrong field a 422 naming it.
///
/// # Errors
/// 400 or 422, as above.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = json_text(body)?;
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::unprocessable(format!("{field}: {}", e.into_inner()))
    })
}
