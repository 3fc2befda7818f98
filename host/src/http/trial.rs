//! `POST /try`: run a module over some events in the sandbox and answer
//! what it would write, log and fail with, committing nothing (see
//! `deployments/trial.rs`). The console's "Try" page and `projector try`
//! call it; it needs the admin token, as it runs code.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth::Admin;
use super::errors::{bad, AppError};
use super::AppState;
use crate::deployments::{Trial, TrialEvents, TrialOutcome, View};
use crate::runtime::Event;

/// Events a trial runs over when the request names none.
const DEFAULT_LAST: usize = 100;

pub(super) fn routes(max_module_bytes: usize) -> Router<AppState> {
    // The module travels in base64 (4 bytes for 3), beside the events.
    let limit = max_module_bytes / 3 * 4 + (8 << 20);
    Router::new().route("/try", post(try_module).layer(DefaultBodyLimit::max(limit)))
}

/// The body of `POST /try`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TryRequest {
    /// A deployed projection: its module unless `module_base64` is given,
    /// and its read model for `view: "current"`.
    projection: Option<String>,
    /// A module to try, in base64.
    module_base64: Option<String>,
    /// Run over the last this many events of `$all`.
    last: Option<usize>,
    /// Or over these events.
    events: Option<Vec<GivenEvent>>,
    /// `empty` or `current` (the default with a projection).
    view: Option<ViewName>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ViewName {
    Empty,
    Current,
}

/// An event given to a trial.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GivenEvent {
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    /// Its JSON data (`{}` when missing).
    data: Option<Box<RawValue>>,
    /// Its JSON metadata (none when missing).
    metadata: Option<Box<RawValue>>,
}

async fn try_module(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<TryRequest>, JsonRejection>,
) -> Result<Json<TrialOutcome>, AppError> {
    let Json(request) = body.map_err(|e| bad("invalid_request", e.body_text()))?;
    let module = match &request.module_base64 {
        Some(text) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| bad("invalid_request", format!("module_base64 is not base64: {e}")))?,
        ),
        None => None,
    };
    let events = match (request.last, request.events) {
        (Some(_), Some(_)) => {
            return Err(bad("invalid_request", "give either `last` or `events`, not both".into()));
        }
        (None, Some(given)) => TrialEvents::Given(given_events(given)?),
        (last, None) => TrialEvents::Last(last.unwrap_or(DEFAULT_LAST)),
    };
    let view = match (request.view, &request.projection) {
        (Some(ViewName::Empty), _) | (None, None) => View::Empty,
        (Some(ViewName::Current), _) | (None, Some(_)) => View::Current,
    };
    let trial = Trial { projection: request.projection, module, events, view };
    Ok(Json(state.deployments.try_module(trial).await?))
}

/// The given events as the module sees events: positions 1, 2, ... in the
/// order given, revisions counted per stream, fresh ids, the time now.
fn given_events(given: Vec<GivenEvent>) -> Result<Vec<Event>, AppError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut revisions = std::collections::HashMap::<String, u64>::new();
    let mut events = Vec::with_capacity(given.len());
    for (i, event) in given.into_iter().enumerate() {
        if event.stream.is_empty() || event.event_type.is_empty() {
            return Err(bad("invalid_request", format!("event {i} needs a non-empty `stream` and `type`")));
        }
        let revision = revisions.entry(event.stream.clone()).or_insert(0);
        events.push(Event {
            stream_id: event.stream,
            event_type: event.event_type,
            event_id: uuid::Uuid::new_v4().to_string(),
            stream_revision: *revision,
            commit_position: i as u64 + 1,
            created_ms: now,
            content_type: "application/json".into(),
            data: event.data.map_or_else(|| b"{}".to_vec(), |d| d.get().as_bytes().to_vec()),
            metadata: event.metadata.map(|m| m.get().as_bytes().to_vec()).unwrap_or_default(),
        });
        *revision += 1;
    }
    Ok(events)
}
