//! The HTTP API: deploy and manage projections, see their status, query
//! their read models; register users and read them back.
//!
//! Errors are JSON `{ "error": { "code", "message" } }` with the matching
//! status; internal details are logged, not returned. Mutating endpoints
//! need `Authorization: Bearer <admin token>`; reads need a token only when
//! the host is given a query token (the admin token is accepted there too).
//!
//! One room per concern: `errors` (the error shape), `auth` (tokens),
//! `upload` (request bodies), `projections` (deploy and lifecycle),
//! `listing` and `documents` (read-model queries), `users` (registration),
//! `rate_limit` (per-client limits, 429).
//! This module only wires them into one router; the API's state lives in
//! [`Deployments`] and [`Registrations`], never here.

mod auth;
mod documents;
mod errors;
mod listing;
mod projections;
mod rate_limit;
mod upload;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::get;
use axum::Router;

use crate::deployments::Deployments;
use crate::users::Registrations;

/// The API's OpenAPI document, served at `/openapi.yaml`.
pub(crate) const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct HttpConfig {
    /// Largest module accepted by a deploy.
    pub(crate) max_module_bytes: usize,
    /// Longest a query with `at_least` waits for its position.
    pub(crate) at_least_wait: Duration,
    /// Bearer token the mutating endpoints require.
    pub(crate) admin_token: String,
    /// Bearer token the read endpoints require, if any.
    pub(crate) query_token: Option<String>,
    /// `POST /users` requests per client per minute (`None`: no limit).
    pub(crate) users_rate_per_minute: Option<std::num::NonZeroU32>,
}

impl HttpConfig {
    /// Default limits, with `admin_token` guarding changes and reads left open.
    pub(crate) fn new(admin_token: String) -> Self {
        HttpConfig {
            max_module_bytes: crate::DEFAULT_MAX_MODULE_MB << 20,
            at_least_wait: Duration::from_secs(5),
            admin_token,
            query_token: None,
            users_rate_per_minute: std::num::NonZeroU32::new(crate::DEFAULT_USERS_RATE_PER_MINUTE),
        }
    }
}

/// What every handler reaches: the deployments, user registration and the settings.
#[derive(Clone)]
struct AppState {
    deployments: Arc<Deployments>,
    registrations: Arc<Registrations>,
    config: Arc<HttpConfig>,
    /// The per-client limit of `POST /users`.
    register_limit: rate_limit::RateLimit,
}

/// The API's routes over `deployments`, with user registration handled by `registrations`.
pub(crate) fn router(deployments: Arc<Deployments>, registrations: Arc<Registrations>, config: HttpConfig) -> Router {
    let limit = config.max_module_bytes;
    let register_limit = rate_limit::RateLimit::per_minute(config.users_rate_per_minute, "registrations");
    let state = AppState { deployments, registrations, config: Arc::new(config), register_limit };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.yaml", get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }))
        .merge(projections::routes())
        .merge(documents::routes())
        .merge(users::routes())
        .fallback(errors::no_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |request, next| upload::finish_refused_upload(request, next, limit)))
        .layer(axum::middleware::from_fn(errors::json_errors))
        .with_state(state)
}
