//! A native test harness: given events, expect documents.
//!
//! The harness behaves like the host where a projection can tell: it delivers
//! only the events the description asks for (never `$`-system events), gives
//! them increasing positions and per-stream revisions, checks every write with
//! the host's own [`rules`] (same limits, same errors, same order), and
//! applies each `given` call as one batch that is discarded whole if any
//! event fails.
//!
//! Where the host would skip an event quietly, the harness does not: an event
//! handed to [`Harness::given`] that the projection's [`Description`] does not
//! want fails the batch with a message naming the event and the filter that
//! refused it, since a test whose events never arrive proves nothing. A test
//! that means to show an event is ignored says so with
//! [`TestEvent::expect_ignored`].
//!
//! It does not apply the host's sandbox limits (a batch's deadline, its
//! memory cap, its write budget): those depend on the machine, not on the
//! projection's logic.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;

use serde::Serialize;
use serde_json::Value;

use crate::model::{Backend, Level, WriteError};
use crate::{apply_batch, rules, BatchError, Description, Error, Event, Projection, ReadModel};

/// The document size limit the host applies by default: an alias of
/// [`rules::MAX_DOCUMENT_BYTES`], kept so that code written against it
/// still builds.
#[deprecated(note = "use `projector_guest_sdk::rules::MAX_DOCUMENT_BYTES`")]
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = rules::MAX_DOCUMENT_BYTES;

/// The stream of a [`TestEvent`] that was given none.
const DEFAULT_STREAM: &str = "test";

thread_local! {
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn record_log(level: Level, message: &str) {
    LOGS.with(|logs| logs.borrow_mut().push((level, message.to_owned())));
}

/// An event to feed the harness, built fluently.
///
/// Its stream is `test` unless [`TestEvent::stream`] sets one. That default
/// suits a projection that reads every stream; one that filters streams
/// (`Description::streams`) never wants it, and [`Harness::given`] says so
/// instead of dropping the event. The default is kept, rather than a stream
/// being required, so that events of unfiltered projections stay short to
/// write.
#[derive(Debug, Clone)]
pub struct TestEvent {
    /// `None` for [`DEFAULT_STREAM`], so that a refusal can say it was not chosen.
    stream_id: Option<String>,
    event_type: String,
    content_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
    created_ms: i64,
    expect_ignored: bool,
}

impl TestEvent {
    /// A JSON event of type `event_type`, in stream `test` until
    /// [`TestEvent::stream`] says otherwise.
    pub fn json<T: Serialize + ?Sized>(event_type: &str, payload: &T) -> Self {
        TestEvent {
            stream_id: None,
            event_type: event_type.into(),
            content_type: "application/json".into(),
            data: serde_json::to_vec(payload).unwrap_or_default(),
            metadata: Vec::new(),
            created_ms: 0,
            expect_ignored: false,
        }
    }

    /// An event with a raw payload (e.g. deliberately malformed JSON).
    pub fn raw(event_type: &str, data: impl Into<Vec<u8>>) -> Self {
        TestEvent { data: data.into(), ..TestEvent::json(event_type, &()) }
    }

    /// Puts the event in `stream`.
    pub fn stream(mut self, stream: &str) -> Self {
        self.stream_id = Some(stream.into());
        self
    }

    /// Marks the event as one the projection must not receive: it still
    /// takes a position and a revision in its stream, as in the store, but
    /// [`Harness::given`] fails the batch if the description wants it
    /// (instead of failing if it does not).
    pub fn expect_ignored(mut self) -> Self {
        self.expect_ignored = true;
        self
    }

    /// Sets the metadata to `metadata` as JSON.
    pub fn metadata<T: Serialize + ?Sized>(mut self, metadata: &T) -> Self {
        self.metadata = serde_json::to_vec(metadata).unwrap_or_default();
        self
    }

    /// Sets `schemaVersion` in the metadata.
    pub fn schema_version(self, version: u32) -> Self {
        self.metadata(&serde_json::json!({ "schemaVersion": version }))
    }

    /// Sets the stored time, in milliseconds since the Unix epoch.
    pub fn created_ms(mut self, created_ms: i64) -> Self {
        self.created_ms = created_ms;
        self
    }

    fn stream_id(&self) -> &str {
        self.stream_id.as_deref().unwrap_or(DEFAULT_STREAM)
    }
}

/// Runs a projection natively over given events and exposes its documents.
#[derive(Debug)]
pub struct Harness<P> {
    documents: BTreeMap<String, BTreeMap<String, Value>>,
    revisions: HashMap<String, u64>,
    position: u64,
    max_document_bytes: usize,
    projection: PhantomData<P>,
}

impl<P: Projection> Default for Harness<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Projection> Harness<P> {
    /// An empty read model.
    pub fn new() -> Self {
        LOGS.with(|logs| logs.borrow_mut().clear());
        Harness {
            documents: BTreeMap::new(),
            revisions: HashMap::new(),
            position: 0,
            max_document_bytes: rules::MAX_DOCUMENT_BYTES,
            projection: PhantomData,
        }
    }

    /// Sets the document size limit, [`rules::MAX_DOCUMENT_BYTES`] by default
    /// as in the host; a smaller one tests how a projection handles
    /// [`WriteError::TooLarge`].
    pub fn max_document_bytes(mut self, limit: usize) -> Self {
        self.max_document_bytes = limit;
        self
    }

    /// Applies `events` as one batch. On error nothing of the batch is kept;
    /// `event_index` counts the events as given here, including those
    /// marked [`TestEvent::expect_ignored`].
    ///
    /// Each event must be delivered exactly as marked: one the projection's
    /// [`Description::wants`] refuses (a stream or type it does not ask for,
    /// a `$`-system type) fails the batch with [`Error::Other`] naming the
    /// event and the filter, unless it is marked
    /// [`TestEvent::expect_ignored`]; one so marked that the projection
    /// wants fails it too. These checks run before the projection sees any
    /// event, and a refused batch takes no positions or revisions.
    pub fn given(&mut self, events: impl IntoIterator<Item = TestEvent>) -> Result<(), BatchError> {
        let description = P::description();
        let events: Vec<TestEvent> = events.into_iter().collect();
        for (event_index, test) in events.iter().enumerate() {
            if description.wants(test.stream_id(), &test.event_type) == test.expect_ignored {
                return Err(BatchError {
                    event_index,
                    error: Error::Other(misdelivery(&description, event_index, test)),
                });
            }
        }
        let mut delivered = Vec::new();
        // For each delivered event, its index among the given ones.
        let mut given_indexes = Vec::new();
        for (event_index, test) in events.into_iter().enumerate() {
            // Every event takes a revision and a position, delivered or not.
            let revision = self.revisions.entry(test.stream_id().to_owned()).or_insert(0);
            let stream_revision = *revision;
            *revision += 1;
            self.position += 1;
            if test.expect_ignored {
                continue;
            }
            given_indexes.push(event_index);
            delivered.push(Event {
                event_id: format!("00000000-0000-4000-8000-{:012x}", self.position),
                stream_id: test.stream_id().to_owned(),
                event_type: test.event_type,
                stream_revision,
                commit_position: self.position,
                created_ms: test.created_ms,
                content_type: test.content_type,
                data: test.data,
                metadata: test.metadata,
            });
        }
        let mut scratch = Scratch { base: &self.documents, writes: BTreeMap::new(), limit: self.max_document_bytes };
        apply_batch::<P>(&delivered, &mut ReadModel::new(&mut scratch))
            .map_err(|failure| BatchError { event_index: given_indexes[failure.event_index], ..failure })?;
        let writes = scratch.writes;
        for ((collection, key), write) in writes {
            let documents = self.documents.entry(collection).or_default();
            match write {
                Some(value) => documents.insert(key, value),
                None => documents.remove(&key),
            };
        }
        self.documents.retain(|_, documents| !documents.is_empty());
        Ok(())
    }

    /// The document under `key` in `collection`.
    pub fn document(&self, collection: &str, key: &str) -> Option<&Value> {
        self.documents.get(collection)?.get(key)
    }

    /// Every document of `collection`, by key.
    pub fn collection(&self, collection: &str) -> BTreeMap<String, Value> {
        self.documents.get(collection).cloned().unwrap_or_default()
    }

    /// The names of the collections that hold documents.
    pub fn collections(&self) -> Vec<String> {
        self.documents.keys().cloned().collect()
    }

    /// The log lines written so far on this thread, oldest first; clears them.
    pub fn take_logs(&self) -> Vec<(Level, String)> {
        LOGS.with(|logs| std::mem::take(&mut *logs.borrow_mut()))
    }
}

/// Why `test`, the `event_index`th event given, is not delivered as its
/// marking says.
fn misdelivery(description: &Description, event_index: usize, test: &TestEvent) -> String {
    let (stream, event_type) = (test.stream_id(), test.event_type.as_str());
    let event = format!("event {event_index} (stream `{stream}`, type `{event_type}`)");
    let name = &description.name;
    if test.expect_ignored {
        return format!("{event} is marked `expect_ignored` but `{name}` wants it: {}", filters(description));
    }
    let mut reasons = Vec::new();
    if event_type.starts_with('$') {
        reasons.push("`$` types are system events, never delivered".to_owned());
    }
    if !description.wants_type(event_type) {
        reasons.push(format!("its type is not one the projection asks for ({})", type_filter(description)));
    }
    if !description.wants_stream(stream) {
        let default =
            if test.stream_id.is_none() { " (`test` is the default: set one with `.stream(...)`)" } else { "" };
        reasons
            .push(format!("its stream matches none of the stream prefixes {:?}{default}", description.stream_prefixes));
    }
    format!(
        "{event} would never reach `{name}`: {}; give it a stream and type the projection wants, or mark it `.expect_ignored()` to test that it is ignored",
        reasons.join("; ")
    )
}

/// Every filter of a description, for a message.
fn filters(description: &Description) -> String {
    let streams = match description.stream_prefixes.as_slice() {
        [] => "any stream".to_owned(),
        prefixes => format!("stream prefixes {prefixes:?}"),
    };
    format!("{streams}; {}", type_filter(description))
}

/// A description's type filter, for a message.
fn type_filter(description: &Description) -> String {
    match (description.event_types.as_slice(), description.event_type_prefixes.as_slice()) {
        ([], []) => "any type".to_owned(),
        (types, []) => format!("event types {types:?}"),
        ([], prefixes) => format!("event type prefixes {prefixes:?}"),
        (types, prefixes) => format!("event types {types:?} or event type prefixes {prefixes:?}"),
    }
}

/// The batch's writes over the committed documents.
struct Scratch<'a> {
    base: &'a BTreeMap<String, BTreeMap<String, Value>>,
    writes: BTreeMap<(String, String), Option<Value>>,
    limit: usize,
}

impl Backend for Scratch<'_> {
    fn get(&mut self, collection: &str, key: &str) -> Option<String> {
        let value = match self.writes.get(&(collection.to_owned(), key.to_owned())) {
            Some(write) => write.clone(),
            None => self.base.get(collection).and_then(|c| c.get(key)).cloned(),
        };
        value.map(|v| v.to_string())
    }

    fn put(&mut self, collection: &str, key: &str, document: String) -> Result<(), WriteError> {
        rules::check_put(collection, key, &document, self.limit)?;
        // The check accepts exactly what a `Value` can hold, so this cannot
        // fail; if it ever did, it would be the same kind of refusal.
        let value: Value = serde_json::from_str(&document).map_err(|e| WriteError::InvalidJson(e.to_string()))?;
        self.writes.insert((collection.to_owned(), key.to_owned()), Some(value));
        Ok(())
    }

    fn delete(&mut self, collection: &str, key: &str) {
        // As in the host: nothing can be stored under a name `put` refuses.
        if rules::check_name(collection, key).is_ok() {
            self.writes.insert((collection.to_owned(), key.to_owned()), None);
        }
    }
}
