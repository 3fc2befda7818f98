//! Who may call what: the [`Admin`] and [`Reader`] extractors a handler
//! takes to require the admin token or read access, checked against
//! `Authorization: Bearer <token>`.
//!
//! Tokens are compared in constant time and never logged. There are no
//! users, roles or sessions here: a request either carries a configured
//! token or it does not. Which endpoints need which proof is decided by the
//! handlers' signatures, not here.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::errors::AppError;
use super::AppState;

/// Proof that the request carries the admin token.
pub(super) struct Admin;

/// Proof that the request may read (no query token configured, or it carries one).
pub(super) struct Reader;

impl<S: Send + Sync> FromRequestParts<S> for Admin
where
    AppState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let state = AppState::from_ref(state);
        match bearer(parts) {
            Some(token) if same_token(token, &state.config.admin_token) => Ok(Admin),
            _ => Err(unauthorized("this endpoint")),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Reader
where
    AppState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let state = AppState::from_ref(state);
        let config = &state.config;
        if config.query_token.is_none() && !config.reads_need_token {
            return Ok(Reader);
        }
        let query_token = config.query_token.as_deref();
        match bearer(parts) {
            Some(token) if query_token.is_some_and(|expected| same_token(token, expected)) => Ok(Reader),
            Some(token) if same_token(token, &config.admin_token) => Ok(Reader),
            _ => Err(unauthorized("reading")),
        }
    }
}

/// Refuses a request whose `Host` header names a host this API does not
/// answer for (see [`HttpConfig::allowed_hosts`](super::HttpConfig)): a page
/// that rebinds its own name to 127.0.0.1 still sends its own name.
pub(super) async fn allowed_host(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(allowed) = &state.config.allowed_hosts else { return next.run(request).await };
    let given = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if allowed.iter().any(|name| name.eq_ignore_ascii_case(host_name(given))) {
        return next.run(request).await;
    }
    AppError::new(
        StatusCode::FORBIDDEN,
        "host_not_allowed",
        format!(
            "Host {given:?} is not one this API answers for ({}); start the host with --allowed-host NAME to add one",
            allowed.join(", ")
        ),
    )
    .into_response()
}

/// The name part of a `Host` header value: `[::1]:8080` -> `[::1]`, `a.b:80` -> `a.b`.
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(parts: &Parts) -> Option<&str> {
    parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Compares in time independent of where the strings differ.
fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn unauthorized(what: &str) -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{what} needs 'Authorization: Bearer <token>' with a valid token"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_is_the_same() {
        assert!(same_token("s3cret-token", "s3cret-token"));
        assert!(same_token("", ""));
        assert!(!same_token("s3cret-token", "s3cret-tokeN"), "the last byte differs");
        assert!(!same_token("S3cret-token", "s3cret-token"), "the first byte differs");
        assert!(!same_token("s3cret", "s3cret-token"), "a prefix");
        assert!(!same_token("s3cret-token-and-more", "s3cret-token"), "an extension");
        assert!(!same_token("", "s3cret-token"));
    }

    #[test]
    fn the_host_name_is_the_host_header_without_its_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("evil.example:8080"), "evil.example");
        assert_eq!(host_name(""), "");
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header_only() {
        let parts = |value: Option<&str>| {
            let mut request = axum::http::Request::builder();
            if let Some(value) = value {
                request = request.header(header::AUTHORIZATION, value);
            }
            request.body(()).expect("request").into_parts().0
        };
        assert_eq!(bearer(&parts(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&parts(Some("Bearer "))), Some(""));
        assert_eq!(bearer(&parts(Some("Basic abc"))), None);
        assert_eq!(bearer(&parts(None)), None);
    }
}
