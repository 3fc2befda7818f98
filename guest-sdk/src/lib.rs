//! Write Projector projections in Rust.
//!
//! A projection turns events into JSON documents. It is compiled to
//! WebAssembly, deployed into the Projector host, and unit-tested natively
//! with `cargo test`. A complete projection:
//!
//! ```
//! use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};
//! use serde_json::json;
//!
//! pub struct Counter;
//!
//! impl Projection for Counter {
//!     fn description() -> Description {
//!         Description::new("counter", "1.0.0").event_types(["Clicked"])
//!     }
//!
//!     fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
//!         let button: String = event.json::<serde_json::Value>()?["button"].as_str().unwrap_or("?").into();
//!         let count = model.get::<u64>("clicks", &button)?.unwrap_or(0);
//!         model.put("clicks", &button, &(count + 1))
//!     }
//! }
//!
//! projector_guest_sdk::export_projection!(Counter);
//!
//! # let mut harness = projector_guest_sdk::testing::Harness::<Counter>::new();
//! # harness.given([projector_guest_sdk::testing::TestEvent::json("Clicked", &json!({"button": "ok"}))]).unwrap();
//! # assert_eq!(harness.document("clicks", "ok"), Some(&json!(1)));
//! ```
//!
//! and its test, run natively with `cargo test`:
//!
//! ```
//! # use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};
//! # pub struct Counter;
//! # impl Projection for Counter {
//! #     fn description() -> Description { Description::new("counter", "1.0.0").event_types(["Clicked"]) }
//! #     fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
//! #         let button: String = event.json::<serde_json::Value>()?["button"].as_str().unwrap_or("?").into();
//! #         let count = model.get::<u64>("clicks", &button)?.unwrap_or(0);
//! #         model.put("clicks", &button, &(count + 1))
//! #     }
//! # }
//! use projector_guest_sdk::testing::{Harness, TestEvent};
//! use serde_json::json;
//!
//! let mut harness = Harness::<Counter>::new();
//! harness.given([
//!     TestEvent::json("Clicked", &json!({"button": "ok"})),
//!     TestEvent::json("Clicked", &json!({"button": "ok"})),
//! ]).unwrap();
//! assert_eq!(harness.document("clicks", "ok"), Some(&json!(2)));
//! ```
//!
//! An event given to the harness must reach the projection: one its
//! [`Description`] does not want (a projection with `.streams(["order-"])`
//! never wants an event left in the default stream `test`) fails `given`
//! with a message saying which event and which filter, unless it is marked
//! [`testing::TestEvent::expect_ignored`] to show that it is ignored.
//!
//! Projections are deterministic: they have no clock, randomness, files or
//! network, and must write the same documents given the same events.
//!
//! A projection crate is a `cdylib` (the module) and an `rlib` (for its
//! native tests); `projector new NAME` makes one, with a release profile
//! suited to modules (`lto = true`, `codegen-units = 1`, `debug = false`).
//! Build its module with `cargo build --release --target wasm32-unknown-unknown`;
//! the host turns the module into a component when it is deployed.
//!
//! The limits on what a projection writes (name lengths, document size) are
//! in [`rules`]; the host and the test harness both check writes with it.
//!
//! This crate depends on neither tokio nor wasmtime. The WIT contract
//! (`wit/projection.wit`) is its single source of truth; its generated
//! bindings are private.
#![deny(missing_docs)]

mod event;
mod model;
pub mod rules;
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

pub use event::{rfc3339_from_ms, Event, EventSchema};
pub use model::{Level, ReadModel, WriteError};
/// Where a [`ReadModel`]'s documents live; for hosts and benchmarks that run
/// projections natively, not for projection authors.
#[doc(hidden)]
pub mod model_backend {
    pub use crate::model::Backend;
}

/// Re-exported so that projections and the export macro use the same serde.
pub use serde;
pub use serde_json;

/// The result of projection code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Projection logic: what it wants, and how one event changes its documents.
///
/// There is no state between events other than the read model: everything a
/// projection remembers, it stores as documents. The host applies a batch of
/// events and commits its writes (with the position reached) atomically; if
/// `apply` returns an error, the batch's writes are discarded and the
/// projection is faulted at that event.
pub trait Projection {
    /// The projection's name, version, the events it wants and its indexes.
    fn description() -> Description;

    /// Applies one event to the read model.
    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()>;
}

/// What a projection is and which events it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The projection's name, e.g. `user-directory`.
    pub name: String,
    /// The version of its logic.
    pub version: String,
    /// Deliver events whose type is exactly one of these.
    pub event_types: Vec<String>,
    /// Deliver events whose type starts with one of these. With both type
    /// lists empty, every type is delivered.
    pub event_type_prefixes: Vec<String>,
    /// Deliver only events whose stream starts with one of these (all if empty).
    pub stream_prefixes: Vec<String>,
    /// Secondary indexes, as (collection, dotted field path).
    pub indexes: Vec<(String, String)>,
}

impl Description {
    /// A projection that receives every non-system event and has no indexes.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Description {
            name: name.into(),
            version: version.into(),
            event_types: Vec::new(),
            event_type_prefixes: Vec::new(),
            stream_prefixes: Vec::new(),
            indexes: Vec::new(),
        }
    }

    /// Receive events whose type is exactly one of `types`:
    /// `event_types(["OrderShipped"])` does not receive `OrderShippedNotificationSent`.
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Receive events whose type starts with one of `prefixes`, e.g.
    /// `event_type_prefixes(["Order"])` for `OrderPlaced`, `OrderShipped`, ...
    /// Combined with [`Description::event_types`], an event is received when
    /// either accepts its type.
    pub fn event_type_prefixes<S: Into<String>>(mut self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.event_type_prefixes.extend(prefixes.into_iter().map(Into::into));
        self
    }

    /// Receive events from streams whose name starts with one of `prefixes`.
    pub fn streams<S: Into<String>>(mut self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.stream_prefixes.extend(prefixes.into_iter().map(Into::into));
        self
    }

    /// Ask the host to index `field` (a dotted JSON path) of the documents in `collection`.
    pub fn index(mut self, collection: impl Into<String>, field: impl Into<String>) -> Self {
        self.indexes.push((collection.into(), field.into()));
        self
    }

    /// Whether an event of this stream and type is delivered: it matches the
    /// filters, and its type is not a `$`-prefixed system type.
    pub fn wants(&self, stream_id: &str, event_type: &str) -> bool {
        !event_type.starts_with('$') && self.wants_type(event_type) && self.wants_stream(stream_id)
    }

    /// Whether the type filters accept `event_type` (exact types or prefixes).
    pub fn wants_type(&self, event_type: &str) -> bool {
        (self.event_types.is_empty() && self.event_type_prefixes.is_empty())
            || self.event_types.iter().any(|t| t == event_type)
            || starts_with_any(&self.event_type_prefixes, event_type)
    }

    /// Whether the stream filter accepts `stream_id`.
    pub fn wants_stream(&self, stream_id: &str) -> bool {
        self.stream_prefixes.is_empty() || starts_with_any(&self.stream_prefixes, stream_id)
    }
}

fn starts_with_any(prefixes: &[String], value: &str) -> bool {
    prefixes.iter().any(|p| value.starts_with(p.as_str()))
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The event does not have the shape the projection expects.
    InvalidEvent(String),
    /// A read-model operation failed.
    ReadModel(String),
    /// Anything else.
    Other(String),
}

impl Error {
    /// An error for an event whose content the projection cannot use.
    pub fn invalid_event(message: impl Into<String>) -> Self {
        Error::InvalidEvent(message.into())
    }

    /// An error described in words.
    pub fn other(message: impl Into<String>) -> Self {
        Error::Other(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidEvent(m) => write!(f, "invalid event: {m}"),
            Error::ReadModel(m) => write!(f, "read model: {m}"),
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// A batch that failed: the index of the failing event and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// Index of the failing event within the batch.
    pub event_index: usize,
    /// The failure.
    pub error: Error,
}

/// Applies a batch through `model`, stopping at the first failure. The caller
/// (host glue or test harness) discards the writes of a failed batch.
#[doc(hidden)]
pub fn apply_batch<P: Projection>(events: &[Event], model: &mut ReadModel<'_>) -> Result<(), BatchError> {
    for (event_index, event) in events.iter().enumerate() {
        P::apply(event, model).map_err(|error| BatchError { event_index, error })?;
    }
    Ok(())
}

/// Exports a [`Projection`] as the module's entry points.
///
/// Compiled for `wasm32`, it implements the WIT world's exports; natively it
/// expands to nothing, so the same crate runs its tests with `cargo test`.
#[macro_export]
macro_rules! export_projection {
    ($projection:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __ProjectorExport;
            impl $crate::wasm::Guest for __ProjectorExport {
                fn describe() -> $crate::wasm::WitDescription {
                    $crate::wasm::describe::<$projection>()
                }
                fn handle_batch(
                    events: ::std::vec::Vec<$crate::wasm::WitEvent>,
                ) -> ::std::result::Result<(), $crate::wasm::WitBatchError> {
                    $crate::wasm::handle_batch::<$projection>(events)
                }
            }
    $crate::wasm::bindings::__export_projection_world!(__ProjectorExport with_types_in $crate::wasm::bindings);
        };
    };
}

/// Writes a log line, shown by the host under the projection's name (and
/// collected by the test harness). Here at the root, where both backends
/// meet, so the model does not depend on either.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    wasm::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    testing::record_log(level, message);
}
