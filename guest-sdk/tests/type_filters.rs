//! Which event types a description receives: exact types by default,
//! prefixes only when asked for, and the harness applying the same rule.

use projector_guest_sdk::testing::{Harness, TestEvent};
use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};
use serde_json::json;

#[test]
fn event_types_are_exact() {
    let d = Description::new("orders", "1.0.0").event_types(["OrderShipped"]);
    assert!(d.wants("order-1", "OrderShipped"));
    assert!(!d.wants("order-1", "OrderShippedNotificationSent"), "a longer type sharing the name is not wanted");
    assert!(!d.wants("order-1", "OrderShip"));
}

#[test]
fn prefixes_are_asked_for_explicitly_and_combine_with_exact_types() {
    let d = Description::new("orders", "1.0.0").event_type_prefixes(["Order"]);
    assert!(d.wants("order-1", "OrderShipped") && d.wants("order-1", "OrderShippedNotificationSent"));
    assert!(!d.wants("order-1", "PaymentTaken"));

    let both = d.event_types(["PaymentTaken"]);
    assert!(both.wants("order-1", "PaymentTaken") && both.wants("order-1", "OrderPlaced"));
    assert!(!both.wants("order-1", "PaymentTakenTwice"));
}

#[test]
fn no_type_filter_means_every_type_but_the_system_ones() {
    let d = Description::new("everything", "1.0.0");
    assert!(d.wants("any", "Anything"));
    assert!(!d.wants("any", "$metadata"));
}

struct Shipments;

impl Projection for Shipments {
    fn description() -> Description {
        Description::new("shipments", "1.0.0").event_types(["OrderShipped"])
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        model.put("shipped", &event.stream_id, &json!(event.event_type))
    }
}

#[test]
fn the_harness_delivers_by_the_same_rule() {
    let mut harness = Harness::<Shipments>::new();
    harness
        .given([
            TestEvent::json("OrderShipped", &json!({})).stream("order-1"),
            TestEvent::json("OrderShippedNotificationSent", &json!({})).stream("order-2").expect_ignored(),
        ])
        .expect("applies");
    assert_eq!(harness.collection("shipped").len(), 1);

    let error = harness
        .given([TestEvent::json("OrderShippedNotificationSent", &json!({})).stream("order-3")])
        .expect_err("not delivered");
    assert!(
        error
            .error
            .to_string()
            .contains("its type is not one the projection asks for (event types [\"OrderShipped\"])"),
        "{error:?}"
    );
}
