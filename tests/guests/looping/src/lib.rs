//! A projection that never returns from its first event: the host's batch
//! deadline must stop it.

use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};

/// Loops forever.
#[derive(Debug)]
pub struct Looping;

impl Projection for Looping {
    fn description() -> Description {
        Description::new("looping", "0.0.1")
    }

    fn apply(event: &Event, _model: &mut ReadModel<'_>) -> Result<()> {
        let mut n = event.stream_revision;
        loop {
            n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
        }
    }
}

projector_guest_sdk::export_projection!(Looping);
