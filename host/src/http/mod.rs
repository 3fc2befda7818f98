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
//! `rate_limit` (per-client limits, 429), `trial` (`POST /try`), `console`
//! (the web console at `/`).
//! This module only wires them into one router; the API's state lives in
//! [`Deployments`] and [`Registrations`], never here.

mod auth;
mod console;
mod documents;
mod errors;
mod listing;
mod projections;
mod rate_limit;
mod server;
mod trial;
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
pub(crate) use server::{serve, tls_config, ServeConfig};

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
    /// Whether reads need a token even when no query token is set (then the
    /// admin token): the default for a host listening beyond loopback.
    pub(crate) reads_need_token: bool,
    /// The `Host` header values (names, without port) requests may carry;
    /// any when `None`. A loopback host allows only loopback names, so a web
    /// page cannot reach it through DNS rebinding.
    pub(crate) allowed_hosts: Option<Vec<String>>,
    /// Longest a listing or count may run before it is stopped (503).
    pub(crate) query_time_limit: Duration,
    /// Most listings and counts running at once, host-wide.
    pub(crate) max_concurrent_scans: usize,
    /// Queries (documents, listings, dead letters) per client per minute (`None`: no limit).
    pub(crate) query_rate_per_minute: Option<std::num::NonZeroU32>,
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
            reads_need_token: false,
            allowed_hosts: None,
            query_time_limit: DEFAULT_QUERY_TIME_LIMIT,
            max_concurrent_scans: default_concurrent_scans(),
            users_rate_per_minute: std::num::NonZeroU32::new(crate::DEFAULT_USERS_RATE_PER_MINUTE),
            query_rate_per_minute: None,
        }
    }
}

/// The default time limit of a listing or count.
pub(crate) const DEFAULT_QUERY_TIME_LIMIT: Duration = Duration::from_secs(3);

/// One scan per core but one, so lookups by key and the projections always
/// have a core; at least one.
pub(crate) fn default_concurrent_scans() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// What every handler reaches: the deployments, user registration and the settings.
#[derive(Clone)]
struct AppState {
    deployments: Arc<Deployments>,
    registrations: Arc<Registrations>,
    config: Arc<HttpConfig>,
    /// Turns to run a listing or count ([`HttpConfig::max_concurrent_scans`]).
    scans: Arc<tokio::sync::Semaphore>,
    /// The per-client limit of `POST /users`.
    register_limit: rate_limit::RateLimit,
}

/// The API's routes over `deployments`, with user registration handled by `registrations`.
pub(crate) fn router(deployments: Arc<Deployments>, registrations: Arc<Registrations>, config: HttpConfig) -> Router {
    let limit = config.max_module_bytes;
    let scans = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_scans));
    let register_limit = rate_limit::RateLimit::per_minute(config.users_rate_per_minute, "registrations");
    let query_limit = rate_limit::RateLimit::per_minute(config.query_rate_per_minute, "queries");
    let queries = deployments.queries().clone();
    let state = AppState { deployments, registrations, config: Arc::new(config), scans, register_limit };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.yaml", get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }))
        .merge(projections::routes())
        .merge(
            documents::routes()
                .route_layer(axum::middleware::from_fn(move |request, next| query_limit.clone().layer(request, next)))
                .route_layer(axum::middleware::from_fn(move |request, next: axum::middleware::Next| {
                    let queries = queries.clone();
                    async move {
                        let _answering = queries.answering();
                        next.run(request).await
                    }
                })),
        )
        .merge(users::routes())
        .merge(trial::routes(limit))
        .merge(console::routes())
        .fallback(errors::no_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |request, next| upload::finish_refused_upload(request, next, limit)))
        .layer(axum::middleware::from_fn(errors::json_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::allowed_host))
        .with_state(state)
}
