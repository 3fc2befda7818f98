//! A projection that takes every event and does nothing with it: what a batch
//! costs at the Wasm boundary alone (the benchmark's baseline).

use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};

/// Does nothing.
#[derive(Debug)]
pub struct Noop;

impl Projection for Noop {
    fn description() -> Description {
        Description::new("noop", "0.0.1")
    }

    fn apply(_event: &Event, _model: &mut ReadModel<'_>) -> Result<()> {
        Ok(())
    }
}

projector_guest_sdk::export_projection!(Noop);
