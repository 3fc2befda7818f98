//! A projection that asks for the exact type `OrderShipped` on any stream
//! and records every event it gets in `seen`, keyed by event id:
//! `{ "type": ... }`. Beside `guest-legacy`, which asks for the same name
//! as a 0.1.0 prefix.

use projector_guest_sdk::{serde_json::json, Description, Event, Projection, ReadModel, Result};

/// The projection.
#[derive(Debug)]
pub struct Shipments;

impl Projection for Shipments {
    fn description() -> Description {
        Description::new("shipments", "1.0.0").event_types(["OrderShipped"])
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        model.put("seen", &event.event_id, &json!({ "type": event.event_type }))
    }
}

projector_guest_sdk::export_projection!(Shipments);
