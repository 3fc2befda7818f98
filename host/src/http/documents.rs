//! Reading a projection's read model: one document, a listing (filtered,
//! ordered, paged, or counted), the dead letters; each optionally after
//! waiting, bounded, until the projection has applied a position
//! (`at_least`, read-your-writes).
//!
//! Only reads: nothing here changes a projection. The query strings are
//! parsed in `listing`; the queries themselves run in the read model
//! (`readmodel`), on the blocking threads.

use std::time::Instant;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::Reader;
use super::errors::{bad, blocking, on_blocking_thread, AppError};
use super::listing::{page_limit, parse_list_request, Cursor};
use super::AppState;
use crate::deployments::Deployment;
use crate::readmodel::DeadLetter;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/projections/{name}/dead-letters", get(dead_letters))
        .route("/projections/{name}/collections/{collection}", get(list_documents))
        .route("/projections/{name}/collections/{collection}/{key}", get(get_document))
}

/// `wait_for` for a document query (counted as being answered): a rebuild
/// need not give way to it while it only waits.
async fn wait_counted(state: &AppState, projection: &Deployment, at_least: Option<u64>) -> Result<(), AppError> {
    let _waiting = at_least.map(|_| state.deployments.queries().waiting());
    wait_for(state, projection, at_least).await
}

/// Waits (bounded by the configured `at_least` wait) until `projection` has
/// applied `at_least`: 503 if it stopped short of it, 504 if it is still on its way.
pub(super) async fn wait_for(state: &AppState, projection: &Deployment, at_least: Option<u64>) -> Result<(), AppError> {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentQuery {
    at_least: Option<u64>,
}

async fn get_document(
    _: Reader,
    State(state): State<AppState>,
    Path((name, collection, key)): Path<(String, String, String)>,
    Query(query): Query<DocumentQuery>,
) -> Result<Response, AppError> {
    let projection = state.deployment(&name)?;
    valid_collection(&collection)?;
    wait_counted(&state, &projection, query.at_least).await?;
    let db = projection.db();
    let (c, k) = (collection.clone(), key.clone());
    let started = Instant::now();
    let doc = blocking(move || db.document(&c, &k)).await?;
    state.deployments.metrics().query(&name, "document", started.elapsed());
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

async fn list_documents(
    _: Reader,
    State(state): State<AppState>,
    Path((name, collection)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let projection = state.deployment(&name)?;
    valid_collection(&collection)?;
    let request = parse_list_request(raw.as_deref())?;
    wait_counted(&state, &projection, request.at_least).await?;
    let db = projection.db();
    let time_limit = state.config.query_time_limit;
    // Listings scan: at most a few run at once host-wide, so that scans
    // cannot take every core from lookups by key and from the projections.
    // The turn goes with the query onto its blocking thread: a client that
    // hangs up cannot give it back while its scan still runs.
    let scan = tokio::time::timeout(time_limit, state.scans.clone().acquire_owned())
        .await
        .map_err(|_| busy(time_limit))?
        .map_err(|e| AppError::internal(e.into()))?;
    let started = Instant::now();
    let mut query = request.query;
    query.time_limit = Some(time_limit);
    if request.count {
        let count = on_blocking_thread(move || {
            let _scan = scan;
            db.count(&collection, &query)
        })
        .await??;
        state.deployments.metrics().query(&name, "count", started.elapsed());
        return Ok(Json(serde_json::json!({ "count": count })).into_response());
    }
    let limit = query.limit;
    query.limit = limit + 1;
    let ordered = query.order.is_some();
    let items = on_blocking_thread(move || {
        let _scan = scan;
        db.query(&collection, &query)
    })
    .await??;
    state.deployments.metrics().query(&name, "list", started.elapsed());
    let more = items.len() > limit;
    let last = items.get(limit.saturating_sub(1)).filter(|_| more);
    let next = match (last, ordered) {
        (None, _) => None,
        (Some(item), false) => Some(Cursor::AfterKey(item.key.clone())),
        (Some(item), true) => Some(Cursor::After(item.sort_value.clone(), item.key.clone())),
    };
    let items: Vec<ListItem> = items
        .into_iter()
        .take(limit)
        .map(|item| Ok(ListItem { key: item.key, doc: RawValue::from_string(item.doc)? }))
        .collect::<Result<_, serde_json::Error>>()
        .map_err(|e| AppError::internal(e.into()))?;
    Ok(Json(ListPage { items, next_cursor: next.as_ref().map(Cursor::encode) }).into_response())
}

/// A collection name as a URL may carry it: no control characters (NUL
/// would cut the SQL text, a line break would forge a log line).
fn valid_collection(collection: &str) -> Result<(), AppError> {
    if collection.chars().any(char::is_control) {
        return Err(bad(
            "invalid_collection",
            format!(
                "collection name {collection:?} contains control characters; no collection can have such a name here"
            ),
        ));
    }
    Ok(())
}

/// The 503 for a listing that waited its whole time limit for a turn to scan.
fn busy(waited: std::time::Duration) -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!("every scan slot stayed busy for {waited:?}; retry shortly"),
    )
    .retry_after(1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct DeadLetterPage {
    items: Vec<DeadLetter>,
    /// Pass as `after` for the next page.
    next_after: Option<u64>,
}

async fn dead_letters(
    _: Reader,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DeadLetterQuery>,
) -> Result<Json<DeadLetterPage>, AppError> {
    let limit = match query.limit {
        Some(limit) => page_limit(&limit.to_string())?,
        None => 100,
    };
    let db = state.deployment(&name)?.db();
    let items = blocking(move || db.dead_letters(query.after, limit + 1)).await?;
    let more = items.len() > limit;
    let items: Vec<_> = items.into_iter().take(limit).collect();
    let next_after = if more { items.last().map(|l| l.position) } else { None };
    Ok(Json(DeadLetterPage { items, next_after }))
}
