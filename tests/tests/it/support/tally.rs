//! The `tally` test guest (`tests/guests/tally`): its two builds, the
//! events it counts, and its total.
//!
//! `tally` records which version applied each event of a `tally-` stream
//! (collection `events`, by event id) and keeps a count (`totals/all`);
//! 1.0.0 and 2.0.0 are the same source built twice. A `TallyPoison` event
//! is refused by both.

use eventstore::{AppendToStreamOptions, EventData};
use projector_tests::within;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::Api;

/// `tally` built as 1.0.0.
pub(crate) const V1: &str = env!("WASM_GUEST_TALLY");
/// `tally` built as 2.0.0.
pub(crate) const V2: &str = env!("WASM_GUEST_TALLY_V2");

/// An event `tally` counts.
pub(crate) fn event(n: u64) -> EventData {
    EventData::json("Tallied", &json!({ "n": n })).expect("event")
}

/// Appends `count` counted events with known ids to `stream` in one append;
/// returns the ids and the commit position.
pub(crate) async fn append(events: &eventstore::Client, stream: &str, count: u64) -> (Vec<String>, u64) {
    let ids: Vec<uuid::Uuid> = (0..count).map(|_| uuid::Uuid::new_v4()).collect();
    let batch: Vec<EventData> = ids.iter().zip(0..).map(|(id, n)| event(n).id(*id)).collect();
    let written = events.append_to_stream(stream, &AppendToStreamOptions::default(), batch).await.expect("append");
    (ids.iter().map(|id| id.to_string()).collect(), written.position.commit)
}

/// The total of the `tally` deployed as `name`, once it has applied `at_least`.
pub(crate) async fn total(api: &Api, name: &str, at_least: u64) -> Value {
    let path = format!("/projections/{name}/collections/totals/all?at_least={at_least}");
    let (status, body) = within("the total", api.get(&path)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}
