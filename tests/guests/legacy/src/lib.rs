//! A projection as modules were built before the contract's 0.2.0: against
//! `wit/legacy/projection-0.1.0.wit`, with bindings of its own (no SDK).
//! It asks for the type prefix `OrderShipped` (which, in 0.1.0, also
//! delivers `OrderShippedNotificationSent`) and records every event it gets
//! in `seen`, keyed by event id: `{ "type": ... }`. An event of type
//! `OrderShippedBadly` is refused, and a put of a document that is not JSON
//! must come back as the 0.1.0 `invalid-json` refusal.

// The generated bindings declare the exports and call the imports unsafely.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../wit/legacy/projection-0.1.0.wit",
    world: "projection",
});

use projector::projection::types::HandleError;
use projector::projection::{log, read_model};

struct Legacy;

impl Guest for Legacy {
    fn describe() -> Description {
        Description {
            name: "legacy".into(),
            version: "0.1.0".into(),
            event_type_prefixes: vec!["OrderShipped".into()],
            stream_prefixes: Vec::new(),
            indexes: Vec::new(),
        }
    }

    fn handle_batch(events: Vec<Event>) -> Result<(), BatchError> {
        for (index, event) in events.iter().enumerate() {
            let refuse = |message: String| BatchError { event_index: index as u32, error: HandleError::Other(message) };
            if event.event_type == "OrderShippedBadly" {
                return Err(refuse("refused on purpose".into()));
            }
            match read_model::put("seen", &event.event_id, "not json") {
                Err(read_model::WriteError::InvalidJson(_)) => {}
                other => return Err(refuse(format!("a put of `not json` gave {other:?}"))),
            }
            let document = format!("{{\"type\":\"{}\"}}", event.event_type);
            read_model::put("seen", &event.event_id, &document).map_err(|e| refuse(format!("{e:?}")))?;
            log::write(log::Level::Debug, &format!("saw {}", event.event_type));
        }
        Ok(())
    }
}

export!(Legacy);
