//! `POST /users` (register) and `GET /users/{id}` (read back).
//!
//! Registration is open (it is how users sign up) but limited per client
//! (429 beyond `--users-rate-per-minute`); reading a user needs the query
//! token when the host has one. `GET` reads the directory
//! projection's read model, never the event stream, and never answers with
//! a password hash.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::auth::Reader;
use super::documents::wait_for;
use super::errors::{bad, blocking, AppError};
use super::upload::read_body;
use super::AppState;
use crate::users::{RegisterError, RegisterUser};

/// Largest registration body accepted.
const MAX_BODY: usize = 64 << 10;
/// Longest accepted `Idempotency-Key`.
const MAX_KEY: usize = 255;
/// What a 503 tells the caller to wait before retrying.
const RETRY_AFTER_SECONDS: u32 = 2;
/// How long a refusal for the rate limit is held before it is answered.
const LIMITED_HOLD: Duration = Duration::from_secs(1);
/// What a 503 for a full hashing queue tells the caller to wait: the queue
/// drains within about a second at the default cost (docs/adr/0010).
const BUSY_RETRY_AFTER_SECONDS: u32 = 1;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", post(register).layer(DefaultBodyLimit::max(MAX_BODY)))
        .route("/users/{id}", get(get_user))
}

async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    if let Err(refused) = state.register_limit.check(peer.ip()) {
        state.deployments.metrics().registration_shed("rate_limited");
        // Held before it is answered: a client that ignores Retry-After
        // and sends again at once would otherwise get refusals as fast as
        // the host can write them, which costs the host more than the
        // registrations it refuses (docs/adr/0010).
        tokio::time::sleep(LIMITED_HOLD.min(Duration::from_secs(refused.seconds.into()))).await;
        return Ok(refused.into_response());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(bad(
            "invalid_content_type",
            "the body must be JSON sent as 'Content-Type: application/json'".into(),
        ));
    }
    let key = idempotency_key(&headers)?;
    let body = read_body(body, "body_too_large", || format!("the body is larger than {MAX_BODY} bytes"))?;
    let json: Value =
        serde_json::from_slice(&body).map_err(|e| bad("invalid_json", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(object) = json else {
        return Err(bad("invalid_json", "the body must be a JSON object with email, username and password".into()));
    };
    let command = RegisterUser::from_json(object).map_err(validation)?;
    let registered = state.registrations.register(command, key.as_deref()).await.map_err(|e| match e {
        RegisterError::Invalid(fields) => validation(fields),
        RegisterError::Taken(fields) => {
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            AppError::new(StatusCode::CONFLICT, "conflict", format!("{} already taken", names.join(" and ")))
                .with_fields(fields)
        }
        RegisterError::KeyReused => AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency-Key reused with a different request",
        ),
        RegisterError::Busy => AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registration_busy",
            "too many registrations are waiting for a password hash; nothing was done, retry later",
        )
        .retry_after(BUSY_RETRY_AFTER_SECONDS),
        RegisterError::KeyAbandoned => AppError::new(
            StatusCode::CONFLICT,
            "idempotency_key_abandoned",
            "the registration under this Idempotency-Key stalled and was abandoned; send it again with a new key",
        ),
        RegisterError::Unavailable(message) => {
            tracing::warn!("registration not accepted: {message}");
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the registration could not complete: the event store is unavailable or too slow; \
                 retry later (with the same Idempotency-Key to be safe)",
            )
            .retry_after(RETRY_AFTER_SECONDS)
        }
        RegisterError::Internal(e) => AppError::internal(e),
    })?;
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/users/{}", registered.id))],
        Json(serde_json::json!({ "id": registered.id, "position": registered.position })),
    )
        .into_response();
    if registered.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn validation(fields: crate::users::FieldErrors) -> AppError {
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", format!("invalid fields: {}", names.join(", ")))
        .with_fields(fields)
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    match value.to_str() {
        Ok(key) if (1..=MAX_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(bad(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters (no spaces)"),
        )),
    }
}

async fn get_user(
    _: Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let mut at_least = None;
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "at_least" => {
                at_least = Some(
                    value
                        .parse()
                        .map_err(|_| bad("invalid_position", format!("at_least '{value}' is not a position")))?,
                )
            }
            other => return Err(bad("unknown_parameter", format!("unknown query parameter '{other}'"))),
        }
    }
    let directory = state.registrations.directory();
    let Some(projection) = state.deployments.get(directory) else {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "directory_unavailable",
            format!("users are read from the projection '{directory}', which is not deployed"),
        ));
    };
    wait_for(&state, &projection, at_least).await?;
    let db = projection.db();
    let key = id.clone();
    let doc = blocking(move || db.document("users", &key)).await?;
    let Some(doc) = doc else {
        return Err(AppError::new(StatusCode::NOT_FOUND, "unknown_user", format!("no user '{id}'")));
    };
    let mut user: Value = serde_json::from_str(&doc).map_err(|e| AppError::internal(e.into()))?;
    if let Value::Object(fields) = &mut user {
        // Whatever the directory projection stores, no hash leaves here.
        fields.retain(|name, value| {
            !name.to_ascii_lowercase().contains("password")
                && !value.as_str().is_some_and(|text| text.starts_with("$argon2"))
        });
    }
    Ok(Json(user).into_response())
}
