//! The event-store operations the registration needs, each bounded by a
//! timeout, with the client's errors sorted into what the caller branches on:
//! a revision conflict, an outage (answered 503), or a real failure.

use std::future::Future;
use std::time::Duration;

use eventstore::{
    AppendToStreamOptions, EventData, ExpectedRevision, ReadStreamOptions, RecordedEvent, StreamPosition,
};
use projector_events::Current;
use projector_guest_sdk::EventSchema;

/// What went wrong with an event-store operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The stream was not at the expected revision.
    #[error("the stream is not at the expected revision")]
    WrongRevision,
    /// The store did not answer in time or cannot be reached (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error(transparent)]
    Failed(anyhow::Error),
}

/// The event store, as the registration uses it.
#[derive(Clone)]
pub(crate) struct Store {
    client: eventstore::Client,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new(client: eventstore::Client, timeout: Duration) -> Store {
        Store { client, timeout }
    }

    /// Appends `event` (checked against its schema) to `stream` if the
    /// stream is at `expected`; the commit position and the stream's new revision.
    pub(crate) async fn append<E: Current>(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        event: &E,
    ) -> Result<eventstore::WriteResult, StoreError> {
        self.append_noted(stream, expected, event, &[]).await
    }

    /// [`Store::append`] with `notes` (name, text) added to the event's
    /// metadata beside `schemaVersion`: the command side's bookkeeping,
    /// which readers of the event ignore.
    pub(crate) async fn append_noted<E: Current>(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        event: &E,
        notes: &[(&str, &str)],
    ) -> Result<eventstore::WriteResult, StoreError> {
        let encoded = projector_events::encode(event).map_err(|e| StoreError::Failed(anyhow::anyhow!("{e}")))?;
        let data = json_event(encoded, notes).map_err(|e| StoreError::Failed(e.context("encoding an event")))?;
        let options = AppendToStreamOptions::default().expected_revision(expected).deadline(self.timeout);
        self.bounded(&format!("appending to '{stream}'"), self.client.append_to_stream(stream, &options, data)).await
    }

    /// The first event of `stream`, if the stream exists.
    pub(crate) async fn first(&self, stream: &str) -> Result<Option<RecordedEvent>, StoreError> {
        self.one(stream, ReadStreamOptions::default().forwards().position(StreamPosition::Start)).await
    }

    /// The last event of `stream`, if the stream exists.
    pub(crate) async fn last(&self, stream: &str) -> Result<Option<RecordedEvent>, StoreError> {
        self.one(stream, ReadStreamOptions::default().backwards().position(StreamPosition::End)).await
    }

    async fn one(&self, stream: &str, options: ReadStreamOptions) -> Result<Option<RecordedEvent>, StoreError> {
        let options = options.max_count(1).deadline(self.timeout);
        let read = async {
            let mut events = self.client.read_stream(stream, &options).await?;
            match events.next().await {
                Ok(event) => Ok(event.and_then(|e| e.event)),
                Err(eventstore::Error::ResourceNotFound) => Ok(None),
                Err(e) => Err(e),
            }
        };
        self.bounded(&format!("reading '{stream}'"), read).await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        operation: impl Future<Output = eventstore::Result<T>>,
    ) -> Result<T, StoreError> {
        use eventstore::Error as E;
        use tonic::Code;
        let unavailable =
            |why: String| StoreError::Unavailable(format!("the event store is unavailable ({what}: {why})"));
        match tokio::time::timeout(self.timeout, operation).await {
            Err(_) => Err(unavailable(format!("no answer within {:?}", self.timeout))),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(E::WrongExpectedVersion { .. })) => Err(StoreError::WrongRevision),
            // The client reports a refused connection or a node going away as
            // a server-side error with the gRPC status inside: an outage.
            Ok(Err(
                e @ (E::DeadlineExceeded
                | E::ConnectionClosed
                | E::GrpcConnectionError(_)
                | E::NotLeaderException(_)
                | E::ServerError(_)),
            )) => Err(unavailable(e.to_string())),
            Ok(Err(
                e @ E::Grpc {
                    code: Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted, ..
                },
            )) => Err(unavailable(e.to_string())),
            Ok(Err(e)) => Err(StoreError::Failed(anyhow::Error::new(e).context(what.to_owned()))),
        }
    }
}

/// `event` decoded as `E` if it has `E`'s type, upcast from the schema
/// version in its metadata (absent means 1).
pub(crate) fn decode<E: EventSchema>(event: &RecordedEvent) -> Result<Option<E>, StoreError> {
    if event.event_type != E::TYPE {
        return Ok(None);
    }
    let invalid = |why: String| {
        StoreError::Failed(anyhow::anyhow!(
            "{} at revision {} of '{}': {why}",
            E::TYPE,
            event.revision,
            event.stream_id
        ))
    };
    let version = if event.custom_metadata.is_empty() {
        1
    } else {
        let metadata: serde_json::Value =
            serde_json::from_slice(&event.custom_metadata).map_err(|e| invalid(format!("metadata: {e}")))?;
        match metadata.get("schemaVersion") {
            None => 1,
            Some(v) => {
                v.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| invalid(format!("schemaVersion {v}")))?
            }
        }
    };
    E::from_version(version, &event.data).map(Some).map_err(|e| invalid(e.to_string()))
}

/// The text of metadata field `name` of `event`, if it has one.
pub(crate) fn note(event: &RecordedEvent, name: &str) -> Option<String> {
    let metadata: serde_json::Value = serde_json::from_slice(&event.custom_metadata).ok()?;
    metadata.get(name)?.as_str().map(str::to_owned)
}

/// The encoded bytes as they are, marked as JSON, with `notes` added to the metadata.
fn json_event(encoded: projector_events::Encoded, notes: &[(&str, &str)]) -> anyhow::Result<EventData> {
    use serde_json::value::RawValue;
    let data = RawValue::from_string(String::from_utf8(encoded.data)?)?;
    let metadata = if notes.is_empty() {
        RawValue::from_string(String::from_utf8(encoded.metadata)?)?
    } else {
        let mut metadata: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&encoded.metadata)?;
        for (name, text) in notes {
            metadata.insert((*name).to_owned(), serde_json::Value::String((*text).to_owned()));
        }
        RawValue::from_string(serde_json::to_string(&metadata)?)?
    };
    Ok(EventData::json(encoded.event_type, &data)?.metadata_as_json(&metadata)?)
}
