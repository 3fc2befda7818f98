//! A projection that panics on events of type `Boom` and writes otherwise:
//! the host must fault the batch and keep none of its writes.

use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};

/// Panics on `Boom`.
#[derive(Debug)]
pub struct Panicking;

impl Projection for Panicking {
    fn description() -> Description {
        Description::new("panicking", "0.0.1")
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        if event.event_type == "Boom" {
            panic!("boom at revision {}", event.stream_revision);
        }
        model.put("seen", &event.event_id, &event.event_type)
    }
}

projector_guest_sdk::export_projection!(Panicking);
