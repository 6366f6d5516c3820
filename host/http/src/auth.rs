//! Who may call the API: bearer tokens by tenant (stored as SHA-256, compared in constant time), or no check at
//! all (one tenant, `default`) when the server runs without a token file.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header, request::Parts};
use sha2::{Digest, Sha256};

pub use converge_service::DEFAULT_TENANT;

/// A token file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(String);

/// Bearer tokens by tenant, or nobody checks.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// SHA-256 of each token, with its tenant. Empty: authentication is off.
    tokens: Vec<([u8; 32], String)>,
}

impl Auth {
    /// No authentication: every request is tenant `default`.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parse a token file: one `TENANT TOKEN` per line; blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// A malformed line (named by number), a short token, a duplicate token, or no token at all.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let bad = |m: String| Err(AuthError(m));
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(tenant), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return bad(format!("line {}: expected `TENANT TOKEN`", i + 1));
            };
            if token.len() < 16 {
                return bad(format!("line {}: the token is shorter than 16 characters", i + 1));
            }
            if !tenant.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || tenant.len() > 64 {
                return bad(format!("line {}: a tenant is 1-64 characters of [A-Za-z0-9._-]", i + 1));
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if tokens.iter().any(|(d, _)| *d == digest) {
                return bad(format!("line {}: the token is listed twice", i + 1));
            }
            tokens.push((digest, tenant.to_owned()));
        }
        if tokens.is_empty() {
            return bad("no tokens".into());
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

/// The authenticated tenant of a request.
pub struct Tenant(pub String);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let auth = &state.config.auth;
        if !auth.enabled() {
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
        auth.tenant(token.trim()).map(Self).ok_or_else(|| unauthorized("the token is not valid"))
    }
}
