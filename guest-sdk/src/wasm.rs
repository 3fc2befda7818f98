//! The glue between the WIT world and [`Projection`]: compiled for `wasm32`
//! only. The generated binding types stay in here; projection authors never
//! see them.

use crate::model::{Backend, Level, WriteError};
use crate::{apply_batch, Description, Error, Event, Projection, ReadModel};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "projection",
        pub_export_macro: true,
        export_macro_name: "__export_projection_world",
        default_bindings_module: "projector_guest_sdk::wasm::bindings",
    });
}

use bindings::projector::projection::{log as wit_log, read_model, types};

pub use bindings::Guest;
/// The WIT event record.
pub type WitEvent = types::Event;
/// The WIT description record.
pub type WitDescription = types::Description;
/// The WIT batch error record.
pub type WitBatchError = types::BatchError;

/// The module's `describe` export.
pub fn describe<P: Projection>() -> WitDescription {
    let d: Description = P::description();
    types::Description {
        name: d.name,
        version: d.version,
        event_types: d.event_types,
        event_type_prefixes: d.event_type_prefixes,
        stream_prefixes: d.stream_prefixes,
        indexes: d.indexes.into_iter().map(|(collection, field)| types::Index { collection, field }).collect(),
    }
}

/// The module's `handle-batch` export.
pub fn handle_batch<P: Projection>(events: Vec<WitEvent>) -> Result<(), WitBatchError> {
    let events: Vec<Event> = events
        .into_iter()
        .map(|e| Event {
            stream_id: e.stream_id,
            event_type: e.event_type,
            event_id: e.event_id,
            stream_revision: e.stream_revision,
            commit_position: e.commit_position,
            created_ms: e.created_ms,
            content_type: e.content_type,
            data: e.data,
            metadata: e.metadata,
        })
        .collect();
    apply_batch::<P>(&events, &mut ReadModel::new(&mut Host)).map_err(|failed| types::BatchError {
        event_index: failed.event_index as u32,
        error: match failed.error {
            Error::InvalidEvent(m) => types::HandleError::InvalidEvent(m),
            Error::ReadModel(m) => types::HandleError::ReadModel(m),
            Error::Other(m) => types::HandleError::Other(m),
        },
    })
}

/// The host's read model, through the WIT imports.
struct Host;

impl Backend for Host {
    fn get(&mut self, collection: &str, key: &str) -> Option<String> {
        read_model::get(collection, key)
    }

    fn put(&mut self, collection: &str, key: &str, document: String) -> Result<(), WriteError> {
        read_model::put(collection, key, &document).map_err(|e| match e {
            read_model::WriteError::TooLarge(limit) => WriteError::TooLarge(limit),
            read_model::WriteError::InvalidJson(m) => WriteError::InvalidJson(m),
            read_model::WriteError::InvalidName(m) => WriteError::InvalidName(m),
        })
    }

    fn delete(&mut self, collection: &str, key: &str) {
        read_model::delete(collection, key);
    }
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => wit_log::Level::Debug,
        Level::Info => wit_log::Level::Info,
        Level::Warn => wit_log::Level::Warn,
        Level::Error => wit_log::Level::Error,
    };
    wit_log::write(level, message);
}
