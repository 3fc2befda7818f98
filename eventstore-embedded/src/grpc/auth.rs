//! The per-call credentials check of the streams service.
//!
//! The clients send `authorization: Basic base64(user:pass)` on every call
//! when their connection string names a user. As in EventStoreDB, a call
//! without credentials is refused with `PERMISSION_DENIED` and the
//! `exception: access-denied` trailer (missing rights: an anonymous caller
//! has none), and a call with wrong or malformed credentials with
//! `UNAUTHENTICATED`. The Rust client maps both codes to
//! `Error::AccessDenied`; the Node.js client maps the first through its
//! trailer and the second through its code to `AccessDeniedError`.
//!
//! Only the streams service is checked: gossip and server features answer
//! anyone, as in EventStoreDB, because the clients call them while
//! discovering the node. Passwords are compared in constant time and never
//! logged.

use std::sync::Arc;

use base64::Engine;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Code, Request, Status};

use crate::security::Credentials;

/// Checks each call's credentials against the one user; lets every call in
/// when there is none (the insecure mode).
#[derive(Clone)]
pub(crate) struct Authenticator {
    /// `user:pass`, as the header carries it once decoded.
    expected: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("enabled", &self.expected.is_some()).finish()
    }
}

impl Authenticator {
    pub(crate) fn new(user: Option<&Credentials>) -> Authenticator {
        let expected = user.map(|user| format!("{}:{}", user.username(), user.password()).into_bytes().into());
        Authenticator { expected }
    }

    /// Whether `header` (an `authorization` value) names the user.
    fn accepts(expected: &[u8], header: &[u8]) -> bool {
        let Some(encoded) = header.strip_prefix(b"Basic ") else { return false };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded) else { return false };
        same_bytes(&given, expected)
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else { return Ok(request) };
        match request.metadata().get("authorization") {
            None => Err(access_denied()),
            Some(header) if Authenticator::accepts(expected, header.as_bytes()) => Ok(request),
            Some(_) => {
                tracing::debug!("a call with wrong credentials was refused");
                Err(Status::new(Code::Unauthenticated, "Bad credentials"))
            }
        }
    }
}

/// EventStoreDB's answer to a caller without the rights for a call.
fn access_denied() -> Status {
    let mut status = Status::new(Code::PermissionDenied, "Access Denied");
    status.metadata_mut().insert("exception", MetadataValue::from_static("access-denied"));
    status
}

/// Compares in time independent of where the inputs differ.
fn same_bytes(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user_pass: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass)).into_bytes()
    }

    #[test]
    fn only_the_exact_user_and_password_are_accepted() {
        let expected = b"admin:secret";
        assert!(Authenticator::accepts(expected, &header("admin:secret")));
        assert!(!Authenticator::accepts(expected, &header("admin:secreT")));
        assert!(!Authenticator::accepts(expected, &header("admin:secret2")));
        assert!(!Authenticator::accepts(expected, &header("root:secret")));
        assert!(!Authenticator::accepts(expected, b"Bearer secret"));
        assert!(!Authenticator::accepts(expected, b"Basic !!!"));
    }
}
