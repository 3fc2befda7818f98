//! A projection that logs a warning and panics on events of type `Boom`, and
//! writes otherwise: the host must show the log line, fault the batch and
//! keep none of its writes.

use projector_guest_sdk::{log, Description, Event, Level, Projection, ReadModel, Result};

/// Logs and panics on `Boom`.
#[derive(Debug)]
pub struct Panicking;

impl Projection for Panicking {
    fn description() -> Description {
        Description::new("panicking", "0.0.1")
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        if event.event_type == "Boom" {
            log(Level::Warn, &format!("about to fail on {}", event.stream_id));
            panic!("boom at revision {}", event.stream_revision);
        }
        model.put("seen", &event.event_id, &event.event_type)
    }
}

projector_guest_sdk::export_projection!(Panicking);
