//! A projection for the lifecycle tests: for every event on a `tally-`
//! stream it records which version of the module saw it, and keeps a total.
//! Built twice from this source, as 1.0.0 (`guest-tally`) and 2.0.0
//! (`guest-tally-v2`), so a test can tell which code applied which event.
//!
//! Collections:
//! - `events`, keyed by event id: `{ version, position }`;
//! - `totals`, key `all`: `{ count, version }` (`version`: the last writer).
//!
//! An event of type `TallyPoison` is refused (a guest error), for the
//! poison-event policy tests.

use projector_guest_sdk::{Description, Error, Event, Projection, ReadModel, Result};
use serde::{Deserialize, Serialize};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The projection.
#[derive(Debug)]
pub struct Tally;

/// Which version applied an event.
#[derive(Debug, Serialize)]
struct Seen<'a> {
    version: &'a str,
    position: u64,
}

/// Events applied so far.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Total {
    count: u64,
    version: String,
}

impl Projection for Tally {
    fn description() -> Description {
        Description::new("tally", VERSION).streams(["tally-"])
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        if event.event_type == "TallyPoison" {
            return Err(Error::invalid_event("this event is poison"));
        }
        model.put("events", &event.event_id, &Seen { version: VERSION, position: event.commit_position })?;
        model.update("totals", "all", |total: &mut Total| {
            total.count += 1;
            VERSION.clone_into(&mut total.version);
        })
    }
}

projector_guest_sdk::export_projection!(Tally);
