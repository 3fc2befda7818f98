//! How the API answers when something goes wrong: [`AppError`] and its JSON
//! shape `{ "error": { "code", "message" } }`, the mapping of a refused
//! change to its status, the middleware that gives axum's own refusals the
//! same shape, and the helper that runs a blocking read with its failures
//! turned into errors.
//!
//! It decides no request's outcome: the handlers choose which error to
//! answer with; this module only says how it looks on the wire. Internal
//! details are logged here and never returned.

use std::collections::BTreeMap;

use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::deployments::ChangeError;
use crate::readmodel::QueryError;
use crate::runtime::DeployError;

/// An API error: a status, a stable code and a message for the caller;
/// problems by field for a request that names them; when to retry for an outage.
#[derive(Debug)]
pub(super) struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Option<BTreeMap<String, String>>,
    retry_after_seconds: Option<u32>,
}

impl AppError {
    /// An error with `status`, a stable `code` and a message for the caller.
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError { status, code, message: message.into(), fields: None, retry_after_seconds: None }
    }

    /// The same error naming the problem of each field.
    pub(super) fn with_fields(self, fields: BTreeMap<String, String>) -> Self {
        AppError { fields: Some(fields), ..self }
    }

    /// The same error, telling the caller to retry after `seconds`.
    pub(super) fn retry_after(self, seconds: u32) -> Self {
        AppError { retry_after_seconds: Some(seconds), ..self }
    }

    /// A failure of the host: logged in full, reported without details.
    pub(super) fn internal(error: anyhow::Error) -> Self {
        if let Some(unavailable) = error.chain().find_map(|e| e.downcast_ref::<crate::pg::Unavailable>()) {
            tracing::warn!(error = %unavailable, "the read models' database is unavailable");
            return AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "readmodel_unavailable",
                "the read models' database cannot be reached; try again shortly",
            )
            .retry_after(1);
        }
        // Debug formatting escapes line breaks: text from a request cannot forge a log line.
        tracing::error!(error = ?format!("{error:#}"), "request failed");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }
}

#[cfg(test)]
impl AppError {
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    pub(super) fn code(&self) -> &'static str {
        self.code
    }

    pub(super) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(fields) = self.fields {
            error["fields"] = serde_json::json!(fields);
        }
        let mut response = (self.status, Json(serde_json::json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// A refused change: 404 for an unknown name, 422 for a module that does
/// not validate, 409 for a change that does not fit the state, 400 for a
/// request that cannot be met, 500 otherwise.
impl From<ChangeError> for AppError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::Unknown(name) => unknown(&name),
            ChangeError::InvalidModule(e) => {
                let code = match e {
                    DeployError::NotWasm => "not_wasm",
                    DeployError::ForbiddenImport(_) => "forbidden_import",
                    DeployError::Invalid(_) => "invalid_module",
                };
                AppError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
            }
            ChangeError::Conflict(message) => AppError::new(StatusCode::CONFLICT, "conflict", message),
            ChangeError::Invalid(message) => AppError::new(StatusCode::BAD_REQUEST, "invalid_request", message),
            ChangeError::Internal(e) => AppError::internal(e),
        }
    }
}

/// A listing or count not answered: 503 past its time limit (saying how to
/// make it cheaper), 400 for a cursor that does not fit it, 500 otherwise.
impl From<QueryError> for AppError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::TooSlow(limit) => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "query_too_slow",
                format!(
                    "the query ran longer than the {limit:?} limit and was stopped; filter on indexed fields, \
                     use fewer filters or a smaller limit"
                ),
            ),
            QueryError::Invalid(message) => bad("invalid_cursor", message),
            QueryError::Failed(e) => AppError::internal(e),
        }
    }
}

/// A 400 with `code`: the request itself is wrong.
pub(super) fn bad(code: &'static str, message: String) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The 404 for a projection name nothing is deployed under.
pub(super) fn unknown(name: &str) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "unknown_projection", format!("no projection named '{name}'"))
}

/// Runs `work` (a read-model query) on the blocking threads. Its failure,
/// and a panic that ends the task, are internal errors.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, AppError> {
    on_blocking_thread(work).await?.map_err(AppError::internal)
}

/// Runs `work` on the blocking threads; a panic that ends the task is an internal error.
pub(super) async fn on_blocking_thread<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::internal(anyhow::Error::new(e).context("a blocking task did not finish")))
}

/// The answer for a path no route matches.
pub(super) async fn no_route(method: Method, uri: Uri) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "no_route", format!("no endpoint at {method} {}", uri.path()))
}

/// Gives every error the API's JSON shape, including those axum's extractors
/// and routing answer in plain text or with no body at all (a query string
/// that does not parse, a path segment that is not UTF-8, a method the
/// endpoint does not take). Headers are kept.
pub(super) async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let (code, message) = match status {
        // axum adds the `Allow` header after this layer.
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", format!("{method} is not allowed on {path}; the Allow header lists what is"))
        }
        StatusCode::BAD_REQUEST => ("bad_request", text),
        StatusCode::NOT_FOUND => ("not_found", text),
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text),
        StatusCode::UNPROCESSABLE_ENTITY => ("unprocessable", text),
        _ if status.is_server_error() => ("internal", text),
        _ => ("error", text),
    };
    let message =
        if message.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { message };
    let mut converted = AppError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(error: AppError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().expect("ascii").to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, retry, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn an_error_answers_with_its_status_code_message_fields_and_retry_time() {
        let plain = AppError::new(StatusCode::CONFLICT, "conflict", "busy");
        let expected = serde_json::json!({ "error": { "code": "conflict", "message": "busy" } });
        assert_eq!(answer(plain).await, (StatusCode::CONFLICT, None, expected));

        let fields = BTreeMap::from([("email".to_owned(), "taken".to_owned())]);
        let full = AppError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "later")
            .with_fields(fields)
            .retry_after(2);
        let expected = serde_json::json!({
            "error": { "code": "store_unavailable", "message": "later", "fields": { "email": "taken" } }
        });
        assert_eq!(answer(full).await, (StatusCode::SERVICE_UNAVAILABLE, Some("2".to_owned()), expected));
    }

    #[tokio::test]
    async fn internal_errors_keep_their_details_out_of_the_answer() {
        let (status, _, body) = answer(AppError::internal(anyhow::anyhow!("disk /secret/path is full"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret"), "{body}");
    }

    #[test]
    fn refused_changes_map_to_their_status_and_code() {
        let cases = [
            (ChangeError::Unknown("orders".into()), StatusCode::NOT_FOUND, "unknown_projection"),
            (ChangeError::InvalidModule(DeployError::NotWasm), StatusCode::UNPROCESSABLE_ENTITY, "not_wasm"),
            (
                ChangeError::InvalidModule(DeployError::ForbiddenImport("wasi:cli/environment".into())),
                StatusCode::UNPROCESSABLE_ENTITY,
                "forbidden_import",
            ),
            (
                ChangeError::InvalidModule(DeployError::Invalid("truncated".into())),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_module",
            ),
            (ChangeError::Conflict("a rebuild runs".into()), StatusCode::CONFLICT, "conflict"),
            (ChangeError::Invalid("too many events".into()), StatusCode::BAD_REQUEST, "invalid_request"),
            (ChangeError::Internal(anyhow::anyhow!("disk full")), StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        ];
        for (change, status, code) in cases {
            let error = AppError::from(change);
            assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
        }
        assert_eq!(AppError::from(ChangeError::Unknown("orders".into())).message(), "no projection named 'orders'");
    }

    #[tokio::test]
    async fn a_blocking_task_that_fails_or_panics_is_an_internal_error() {
        assert_eq!(blocking(|| Ok(7)).await.expect("ran"), 7);
        let failed = blocking(|| -> anyhow::Result<()> { anyhow::bail!("no such table") }).await;
        assert_eq!(failed.expect_err("failed").code(), "internal");
        let panicked = blocking(|| -> anyhow::Result<()> { panic!("a bug") }).await;
        assert_eq!(panicked.expect_err("panicked").status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
