//! A projection that misbehaves in the way each event's type asks, for the
//! sandbox tests: `Recurse` recurses without end (the Wasm stack must run
//! out), `BigDocument` writes a 2 MiB document (over the host's 1 MiB
//! document limit), `ManyWrites` writes a million documents in one batch
//! (over the host's per-batch write budget), `HugeDocument` builds a 100 MiB
//! document (more than the module's default 64 MiB of memory), `NotJson`
//! writes text that is not JSON through the raw import, past the SDK, which
//! only ever writes serialised values. `Fill` is not hostile by itself: it
//! writes 20,000 small documents in one go, for the hostile-query tests.
//! Streams `scribble-`.

use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};

/// Misbehaves on request.
#[derive(Debug)]
pub struct Scribbler;

/// Recurses until the stack is exhausted.
#[inline(never)]
#[allow(unconditional_recursion)] // on purpose
fn recurse(depth: u64) -> u64 {
    std::hint::black_box(recurse(std::hint::black_box(depth + 1))) + 1
}

impl Projection for Scribbler {
    fn description() -> Description {
        Description::new("scribbler", "0.0.1")
            .event_types(["Recurse", "BigDocument", "ManyWrites", "HugeDocument", "NotJson", "Fill"])
            .streams(["scribble-"])
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        match event.event_type.as_str() {
            "Recurse" => {
                let depth = recurse(0);
                model.put("depth", "reached", &depth)
            }
            "BigDocument" => model.put("big", "one", &"x".repeat(2 << 20)),
            "ManyWrites" => {
                let filler = "y".repeat(200);
                for n in 0..1_000_000u32 {
                    model.put("many", &n.to_string(), &filler)?;
                }
                Ok(())
            }
            "HugeDocument" => model.put("big", "huge", &"z".repeat(100 << 20)),
            "NotJson" => write_not_json(),
            "Fill" => {
                for n in 0..20_000u32 {
                    let doc = serde_json::json!({ "n": n, "group": n % 10, "name": format!("doc-{n:05}") });
                    model.put("filled", &format!("{n:05}"), &doc)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Calls the host's `put` with a document that is not JSON.
#[cfg(target_arch = "wasm32")]
fn write_not_json() -> Result<()> {
    use projector_guest_sdk::wasm::bindings::projector::projection::read_model;
    read_model::put("raw", "one", "{this is not json")
        .map_err(|e| projector_guest_sdk::Error::other(format!("the host refused the write: {e:?}")))
}

#[cfg(not(target_arch = "wasm32"))]
fn write_not_json() -> Result<()> {
    Ok(())
}

projector_guest_sdk::export_projection!(Scribbler);
