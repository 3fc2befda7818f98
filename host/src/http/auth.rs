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
        let Some(expected) = &state.config.query_token else { return Ok(Reader) };
        match bearer(parts) {
            Some(token) if same_token(token, expected) || same_token(token, &state.config.admin_token) => Ok(Reader),
            _ => Err(unauthorized("reading")),
        }
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
