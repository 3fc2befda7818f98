//! A projection that allocates without bound: the host's memory cap must stop it.

use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};

/// Allocates until something gives.
#[derive(Debug)]
pub struct Hungry;

impl Projection for Hungry {
    fn description() -> Description {
        Description::new("hungry", "0.0.1")
    }

    fn apply(_event: &Event, _model: &mut ReadModel<'_>) -> Result<()> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

projector_guest_sdk::export_projection!(Hungry);
