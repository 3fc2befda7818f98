//! The harness reports an event that would never reach the projection instead
//! of dropping it, and still lets a test show on purpose that one is ignored.
//! The filter itself (`Description::wants`) is the host's; its cases are not
//! repeated here.

use projector_guest_sdk::testing::{Harness, TestEvent};
use projector_guest_sdk::{BatchError, Description, Error, Event, Projection, ReadModel, Result};
use serde_json::{json, Value};

/// Reads `OrderPlaced` events of `order-` streams; records where each one
/// was, and fails on a payload `{"fail": true}`.
struct Orders;

impl Projection for Orders {
    fn description() -> Description {
        Description::new("orders", "1.0.0").streams(["order-"]).event_types(["OrderPlaced"])
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        if event.json::<Value>()?["fail"] == json!(true) {
            return Err(Error::invalid_event("asked to fail"));
        }
        let seen = json!({ "revision": event.stream_revision, "position": event.commit_position });
        model.put("seen", &event.stream_id, &seen)
    }
}

/// Reads every stream, so the default stream suits it.
struct Everything;

impl Projection for Everything {
    fn description() -> Description {
        Description::new("everything", "1.0.0")
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        model.put("seen", &event.stream_id, &event.event_type)
    }
}

fn placed() -> TestEvent {
    TestEvent::json("OrderPlaced", &json!({}))
}

/// The message of a refused batch, after checking it is a refusal of event
/// `event_index` that left the read model empty.
fn refusal(harness: &Harness<Orders>, result: std::result::Result<(), BatchError>, event_index: usize) -> String {
    let error = result.expect_err("refused");
    assert_eq!(error.event_index, event_index, "{error:?}");
    assert!(harness.collections().is_empty(), "nothing of a refused batch is kept");
    match error.error {
        Error::Other(message) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_event_left_in_the_default_stream_is_reported_not_dropped() {
    let mut harness = Harness::<Orders>::new();
    let result = harness.given([placed().stream("order-1"), placed()]);
    let message = refusal(&harness, result, 1);
    assert_eq!(
        message,
        "event 1 (stream `test`, type `OrderPlaced`) would never reach `orders`: its stream matches none of the \
         stream prefixes [\"order-\"] (`test` is the default: set one with `.stream(...)`); give it a stream and \
         type the projection wants, or mark it `.expect_ignored()` to test that it is ignored"
    );
}

#[test]
fn an_event_of_another_stream_or_type_is_reported_with_the_filter_that_refused_it() {
    let mut harness = Harness::<Orders>::new();
    let result = harness.given([TestEvent::json("OrderPlaced", &json!({})).stream("audit-1")]);
    let message = refusal(&harness, result, 0);
    assert!(message.starts_with("event 0 (stream `audit-1`, type `OrderPlaced`)"), "{message}");
    assert!(message.contains("stream prefixes [\"order-\"]") && !message.contains("default"), "{message}");

    let result = harness.given([TestEvent::json("OrderPlacd", &json!({})).stream("order-1")]);
    let message = refusal(&harness, result, 0);
    assert!(message.contains("type `OrderPlacd`"), "{message}");
    assert!(
        message.contains("its type is not one the projection asks for (event types [\"OrderPlaced\"])"),
        "{message}"
    );
    assert!(!message.contains("stream prefixes"), "only the filter that refused it: {message}");

    let mut everything = Harness::<Everything>::new();
    let error = everything.given([TestEvent::json("$metadata", &json!({}))]).expect_err("refused");
    assert!(error.error.to_string().contains("system events"), "{error:?}");
}

#[test]
fn a_refused_batch_takes_no_positions_or_revisions() {
    let mut harness = Harness::<Orders>::new();
    assert!(harness.given([placed().stream("order-1"), placed()]).is_err());
    harness.given([placed().stream("order-1")]).expect("applies");
    assert_eq!(harness.document("seen", "order-1"), Some(&json!({"revision": 0, "position": 1})));
}

#[test]
fn an_event_marked_ignored_is_skipped_but_takes_its_place_in_the_store() {
    let mut harness = Harness::<Orders>::new();
    harness
        .given([
            placed().stream("order-1"),
            TestEvent::json("OrderAudited", &json!({})).stream("order-1").expect_ignored(),
            placed().stream("audit-1").expect_ignored(),
            placed().stream("order-1"),
        ])
        .expect("applies");
    assert_eq!(harness.collections(), ["seen"]);
    assert_eq!(harness.collection("seen").len(), 1, "only the order stream was delivered");
    assert_eq!(harness.document("seen", "order-1"), Some(&json!({"revision": 2, "position": 4})));
}

#[test]
fn a_failing_event_is_counted_among_the_events_given_including_ignored_ones() {
    let mut harness = Harness::<Orders>::new();
    let failing = TestEvent::json("OrderPlaced", &json!({"fail": true})).stream("order-2");
    let error = harness
        .given([placed().stream("audit-1").expect_ignored(), placed().stream("order-1"), failing])
        .expect_err("fails");
    assert_eq!(error.event_index, 2);
    assert!(matches!(error.error, Error::InvalidEvent(_)), "{:?}", error.error);
    assert!(harness.collections().is_empty());
}

#[test]
fn an_event_marked_ignored_that_the_projection_wants_is_reported() {
    let mut harness = Harness::<Orders>::new();
    let result = harness.given([placed().stream("order-1").expect_ignored()]);
    let message = refusal(&harness, result, 0);
    assert_eq!(
        message,
        "event 0 (stream `order-1`, type `OrderPlaced`) is marked `expect_ignored` but `orders` wants it: \
         stream prefixes [\"order-\"]; event types [\"OrderPlaced\"]"
    );
}

#[test]
fn the_default_stream_reaches_a_projection_that_reads_every_stream() {
    let mut harness = Harness::<Everything>::new();
    harness.given([TestEvent::json("Anything", &json!({}))]).expect("applies");
    assert_eq!(harness.document("seen", "test"), Some(&json!("Anything")));
}
