//! The HTTP API: deploy and manage projections, see their status, query
//! their read models; register users and read them back (`users`).
//!
//! Errors are JSON `{ "error": { "code", "message" } }` with the matching
//! status; internal details are logged, not returned. Mutating endpoints
//! need `Authorization: Bearer <admin token>`; reads need a token only when
//! the host is given a query token (the admin token is accepted there too).

mod users;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts, Path, Query, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::projections::{ChangeError, DeployOptions, Deployed, Projection, Projections, Status};
use crate::readmodel::{Filter, FilterValue, Op, Order, Page, Query as ListQuery};
use crate::registry::ProjectionLimits;
use crate::runtime::DeployError;
use crate::users::Registrations;

/// The API's OpenAPI document, served at `/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest module accepted by a deploy.
    pub max_module_bytes: usize,
    /// Longest a query with `at_least` waits for its position.
    pub at_least_wait: Duration,
    /// Bearer token the mutating endpoints require.
    pub admin_token: String,
    /// Bearer token the read endpoints require, if any.
    pub query_token: Option<String>,
}

impl HttpConfig {
    /// Default limits, with `admin_token` guarding changes and reads left open.
    pub fn new(admin_token: String) -> Self {
        HttpConfig { max_module_bytes: 16 << 20, at_least_wait: Duration::from_secs(5), admin_token, query_token: None }
    }
}

#[derive(Clone)]
struct AppState {
    projections: Arc<Projections>,
    registrations: Arc<Registrations>,
    config: Arc<HttpConfig>,
}

/// The API's routes over `projections`, with user registration handled by `registrations`.
pub fn router(projections: Arc<Projections>, registrations: Arc<Registrations>, config: HttpConfig) -> Router {
    let limit = config.max_module_bytes;
    let state = AppState { projections, registrations, config: Arc::new(config) };
    Router::new()
        .merge(users::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.yaml", get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }))
        .route("/metrics", get(metrics))
        .route("/projections", get(list_projections))
        .route("/projections/{name}", get(get_projection).put(deploy).delete(delete_projection))
        .route("/projections/{name}/stop", post(stop))
        .route("/projections/{name}/start", post(start))
        .route("/projections/{name}/reset", post(reset))
        .route("/projections/{name}/retry", post(retry))
        .route("/projections/{name}/rollback", post(rollback))
        .route("/projections/{name}/dead-letters", get(dead_letters))
        .route("/projections/{name}/collections/{collection}", get(list_documents))
        .route("/projections/{name}/collections/{collection}/{key}", get(get_document))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |request, next| finish_refused_upload(request, next, limit)))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "no_route", format!("no endpoint at {method} {}", uri.path()))
}

/// Gives every error the API's JSON shape, including those axum's extractors
/// and routing answer in plain text or with no body at all (a query string
/// that does not parse, a path segment that is not UTF-8, a method the
/// endpoint does not take). Headers are kept.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
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

/// A request body that stays with the middleware when the handler drops it unread.
struct SharedBody(Arc<parking_lot::Mutex<Option<axum::body::Body>>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.0.lock().as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}

/// Longest a refused request's unread body is read on before the answer goes out.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Reads and discards the rest of a body the handler did not read when it
/// refuses the request (an upload with a wrong token, a module over the size
/// limit), so the client, still sending, gets the answer instead of a broken
/// pipe. At most the upload limit is read after a refusal, eight times it
/// after a 413 (a 100 MiB upload gets its 413), and for at most
/// `DRAIN_WAIT`; past that the connection is closed.
async fn finish_refused_upload(
    request: axum::extract::Request,
    next: axum::middleware::Next,
    limit: usize,
) -> Response {
    let (parts, body) = request.into_parts();
    let slot = Arc::new(parking_lot::Mutex::new(Some(body)));
    let response =
        next.run(axum::extract::Request::from_parts(parts, axum::body::Body::new(SharedBody(slot.clone())))).await;
    let status = response.status();
    let bound = if status == StatusCode::PAYLOAD_TOO_LARGE { limit.saturating_mul(8) } else { limit };
    let unread = slot.lock().take().filter(|body| status.is_client_error() && !body.is_end_stream());
    if let Some(mut body) = unread {
        let drain = async {
            let mut read = 0usize;
            while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > bound {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_WAIT, drain).await;
    }
    response
}

/// Proof that the request carries the admin token.
struct Admin;

/// Proof that the request may read (no query token configured, or it carries one).
struct Reader;

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
            ChangeError::Internal(e) => AppError::internal(e),
        }
    }
}

/// An API error: a status, a stable code and a message for the caller;
/// problems by field for a request that names them; when to retry for an outage.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Option<BTreeMap<String, String>>,
    retry_after_seconds: Option<u32>,
}

impl AppError {
    /// An error with `status`, a stable `code` and a message for the caller.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError { status, code, message: message.into(), fields: None, retry_after_seconds: None }
    }

    /// The same error naming the problem of each field.
    pub fn with_fields(self, fields: BTreeMap<String, String>) -> Self {
        AppError { fields: Some(fields), ..self }
    }

    /// The same error, telling the caller to retry after `seconds`.
    pub fn retry_after(self, seconds: u32) -> Self {
        AppError { retry_after_seconds: Some(seconds), ..self }
    }

    /// A failure of the host: logged in full, reported without details.
    pub fn internal(error: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{error:#}"), "request failed");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
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

/// Projection names: `[a-z0-9][a-z0-9-]{0,62}`, so they are safe in paths.
fn valid_name(name: &str) -> Result<(), AppError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("projection name '{name}' must match [a-z0-9][a-z0-9-]{{0,62}}"),
        ))
    }
}

fn unknown(name: &str) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "unknown_projection", format!("no projection named '{name}'"))
}

fn projection(state: &AppState, name: &str) -> Result<Arc<Projection>, AppError> {
    state.projections.get(name).ok_or_else(|| unknown(name))
}

async fn metrics(_: Reader, State(state): State<AppState>) -> Response {
    let text = state.projections.metrics().render(&state.projections.statuses());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn list_projections(_: Reader, State(state): State<AppState>) -> Json<Vec<Status>> {
    Json(state.projections.statuses())
}

async fn get_projection(
    _: Reader,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Status>, AppError> {
    Ok(Json(state.projections.status(&*projection(&state, &name)?)))
}

/// `mode`, `on_error`, `memory_mb`, `batch_timeout_ms`.
fn parse_deploy_options(raw: Option<&str>) -> Result<DeployOptions, AppError> {
    let mut options = DeployOptions::default();
    let mut limits = ProjectionLimits::default();
    let number = |name: &str, value: &str, range: std::ops::RangeInclusive<u64>| {
        value.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
            bad(
                "invalid_parameter",
                format!("{name} '{value}' must be a whole number from {} to {}", range.start(), range.end()),
            )
        })
    };
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "mode" => options.mode = Some(value.parse().map_err(|m| bad("invalid_parameter", m))?),
            "on_error" => options.on_error = Some(value.parse().map_err(|m| bad("invalid_parameter", m))?),
            "memory_mb" => limits.memory_mb = Some(number("memory_mb", &value, ProjectionLimits::MEMORY_MB)?),
            "batch_timeout_ms" => {
                limits.batch_timeout_ms = Some(number("batch_timeout_ms", &value, ProjectionLimits::BATCH_TIMEOUT_MS)?)
            }
            other => return Err(bad("unknown_parameter", format!("unknown query parameter '{other}'"))),
        }
    }
    if limits != ProjectionLimits::default() {
        options.limits = Some(limits);
    }
    Ok(options)
}

async fn deploy(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    valid_name(&name)?;
    let options = parse_deploy_options(raw.as_deref())?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "module_too_large",
                format!("the module is larger than the limit of {} bytes", state.config.max_module_bytes),
            )
        } else {
            AppError::new(rejection.status(), "invalid_body", rejection.body_text())
        }
    })?;
    if body.is_empty() {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_wasm",
            "the request body is empty; send the module's bytes",
        ));
    }
    let (deployed, status) = state.projections.deploy(&name, body.to_vec(), options).await?;
    let code = match deployed {
        Deployed::Created => StatusCode::CREATED,
        Deployed::Rebuilding => StatusCode::ACCEPTED,
        Deployed::Swapped | Deployed::Unchanged => StatusCode::OK,
    };
    Ok((code, [(header::LOCATION, format!("/projections/{name}"))], Json(status)).into_response())
}

async fn delete_projection(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    valid_name(&name)?;
    state.projections.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Status>, AppError> {
    valid_name(&name)?;
    Ok(Json(state.projections.stop(&name).await?))
}

async fn start(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Status>, AppError> {
    valid_name(&name)?;
    Ok(Json(state.projections.start(&name).await?))
}

async fn reset(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Status>, AppError> {
    valid_name(&name)?;
    Ok(Json(state.projections.reset(&name).await?))
}

async fn retry(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Status>, AppError> {
    valid_name(&name)?;
    Ok(Json(state.projections.retry(&name).await?))
}

async fn rollback(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Status>, AppError> {
    valid_name(&name)?;
    Ok(Json(state.projections.rollback(&name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct DeadLetterPage {
    items: Vec<crate::readmodel::DeadLetter>,
    /// Pass as `after` for the next page.
    next_after: Option<u64>,
}

async fn dead_letters(
    _: Reader,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DeadLetterQuery>,
) -> Result<Json<DeadLetterPage>, AppError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad("invalid_limit", format!("limit '{limit}' must be between 1 and 1000")));
    }
    let db = projection(&state, &name)?.db();
    let items = tokio::task::spawn_blocking(move || db.dead_letters(query.after, limit + 1))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?
        .map_err(AppError::internal)?;
    let more = items.len() > limit;
    let items: Vec<_> = items.into_iter().take(limit).collect();
    let next_after = if more { items.last().map(|l| l.position) } else { None };
    Ok(Json(DeadLetterPage { items, next_after }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentQuery {
    at_least: Option<u64>,
}

/// Waits (bounded) until the projection has applied `at_least`.
async fn wait_for(state: &AppState, projection: &Projection, at_least: Option<u64>) -> Result<(), AppError> {
    let Some(position) = at_least else { return Ok(()) };
    match tokio::time::timeout(state.config.at_least_wait, projection.wait_for(position)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "projection_not_running",
            format!(
                "projection '{}' is {} at checkpoint {:?} and will not reach position {position}",
                projection.name,
                status.state.as_str(),
                status.checkpoint
            ),
        )),
        Err(_) => Err(AppError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "not_caught_up",
            format!(
                "projection '{}' has not reached position {position} within {:?}; its checkpoint is {:?}",
                projection.name,
                state.config.at_least_wait,
                projection.serving().status().checkpoint
            ),
        )),
    }
}

async fn get_document(
    _: Reader,
    State(state): State<AppState>,
    Path((name, collection, key)): Path<(String, String, String)>,
    Query(query): Query<DocumentQuery>,
) -> Result<Response, AppError> {
    let projection = projection(&state, &name)?;
    wait_for(&state, &projection, query.at_least).await?;
    let db = projection.db();
    let (c, k) = (collection.clone(), key.clone());
    let started = Instant::now();
    let doc = tokio::task::spawn_blocking(move || db.document(&c, &k))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?
        .map_err(AppError::internal)?;
    state.projections.metrics().query(&name, "document", started.elapsed());
    match doc {
        Some(doc) => Ok(([(header::CONTENT_TYPE, "application/json")], doc).into_response()),
        None => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no document '{key}' in collection '{collection}' of '{name}'"),
        )),
    }
}

#[derive(Debug, Serialize)]
struct ListItem {
    key: String,
    doc: Box<RawValue>,
}

#[derive(Debug, Serialize)]
struct ListPage {
    items: Vec<ListItem>,
    next_cursor: Option<String>,
}

/// A parsed listing request: `limit`, `cursor`, `at_least`, `order_by`
/// (`field` or `-field`), repeated `filter` (`path<op>value`), `count=true`.
struct ListRequest {
    query: ListQuery,
    at_least: Option<u64>,
    count: bool,
}

fn bad(code: &'static str, message: String) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, code, message)
}

fn parse_list_request(raw: Option<&str>) -> Result<ListRequest, AppError> {
    let mut request = ListRequest { query: ListQuery::default(), at_least: None, count: false };
    let mut cursor = None;
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "limit" => {
                request.query.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad("invalid_limit", format!("limit '{value}' must be between 1 and 1000")))?;
            }
            "cursor" => cursor = Some(value.into_owned()),
            "at_least" => {
                request.at_least = Some(
                    value
                        .parse()
                        .map_err(|_| bad("invalid_position", format!("at_least '{value}' is not a position")))?,
                );
            }
            "order_by" => {
                let (path, descending) = match value.strip_prefix('-') {
                    Some(path) => (path, true),
                    None => (value.as_ref(), false),
                };
                valid_path(path)?;
                request.query.order = Some(Order { path: path.to_owned(), descending });
            }
            "filter" => request.query.filters.push(parse_filter(&value)?),
            "count" => request.count = value == "true",
            other => return Err(bad("unknown_parameter", format!("unknown query parameter '{other}'"))),
        }
    }
    if let Some(cursor) = cursor {
        let invalid =
            || bad("invalid_cursor", format!("cursor '{cursor}' was not issued by this API for this listing"));
        let decoded = unhex(&cursor).ok_or_else(invalid)?;
        request.query.page = match (decoded.split_once(':'), &request.query.order) {
            (Some(("k", key)), None) => Page::AfterKey(Some(key.to_owned())),
            (Some(("o", offset)), Some(_)) => Page::Offset(offset.parse().map_err(|_| invalid())?),
            _ => return Err(invalid()),
        };
    }
    Ok(request)
}

fn valid_path(path: &str) -> Result<(), AppError> {
    crate::readmodel::validate_field(path).map_err(|message| bad("invalid_field", message))
}

/// `age>=30`, `address.city=Paris`, `name="42"` (quotes force a string).
fn parse_filter(text: &str) -> Result<Filter, AppError> {
    const OPS: [(&str, Op); 6] =
        [("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt)];
    let found = text.char_indices().find_map(|(i, _)| {
        OPS.iter().find(|(symbol, _)| text[i..].starts_with(symbol)).map(|(symbol, op)| (i, *symbol, *op))
    });
    let Some((at, symbol, op)) = found else {
        return Err(bad("invalid_filter", format!("filter '{text}' has no operator (= != < <= > >=)")));
    };
    let (path, raw) = (&text[..at], &text[at + symbol.len()..]);
    valid_path(path).map_err(|_| bad("invalid_filter", format!("filter '{text}': '{path}' is not a field path")))?;
    let value = if let Some(quoted) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        FilterValue::Text(quoted.to_owned())
    } else if let Ok(n) = raw.parse::<i64>() {
        FilterValue::Integer(n)
    } else if let Some(x) = raw.parse::<f64>().ok().filter(|x| x.is_finite()) {
        FilterValue::Real(x)
    } else if raw == "true" || raw == "false" {
        FilterValue::Bool(raw == "true")
    } else {
        FilterValue::Text(raw.to_owned())
    };
    Ok(Filter { path: path.to_owned(), op, value })
}

async fn list_documents(
    _: Reader,
    State(state): State<AppState>,
    Path((name, collection)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let projection = projection(&state, &name)?;
    let request = parse_list_request(raw.as_deref())?;
    wait_for(&state, &projection, request.at_least).await?;
    let db = projection.db();
    let started = Instant::now();
    if request.count {
        let filters = request.query.filters;
        let count = tokio::task::spawn_blocking(move || db.count(&collection, &filters))
            .await
            .map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?
            .map_err(AppError::internal)?;
        state.projections.metrics().query(&name, "count", started.elapsed());
        return Ok(Json(serde_json::json!({ "count": count })).into_response());
    }
    let limit = request.query.limit;
    let mut query = request.query;
    query.limit = limit + 1;
    let ordered = query.order.is_some();
    let offset = match query.page {
        Page::Offset(offset) => offset,
        Page::AfterKey(_) => 0,
    };
    let items = tokio::task::spawn_blocking(move || db.query(&collection, &query))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?
        .map_err(AppError::internal)?;
    state.projections.metrics().query(&name, "list", started.elapsed());
    let more = items.len() > limit;
    let items: Vec<ListItem> = items
        .into_iter()
        .take(limit)
        .map(|item| Ok(ListItem { key: item.key, doc: RawValue::from_string(item.doc)? }))
        .collect::<Result<_, serde_json::Error>>()
        .map_err(|e| AppError::internal(e.into()))?;
    let next_cursor = match (more, ordered) {
        (false, _) => None,
        (true, false) => items.last().map(|i| hex(format!("k:{}", i.key).as_bytes())),
        (true, true) => Some(hex(format!("o:{}", offset + limit as u64).as_bytes())),
    };
    Ok(Json(ListPage { items, next_cursor }).into_response())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}
