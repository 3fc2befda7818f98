//! Translation between the wire types and the store's types, including the
//! exact error shapes the official clients decode.
//!
//! EventStoreDB signals most failures as a gRPC status carrying an
//! `exception` metadata entry (`stream-deleted`, `wrong-expected-version`,
//! ...); batch appends instead carry a `google.rpc.Status` whose `details` is
//! a typed message. Both are built here, once.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::proto::event_store::client as shared;
use crate::proto::event_store::client::streams::read_resp;
use crate::proto::google::rpc;
use crate::storage::{CurrentRevision, ExpectedRevision, ProposedEvent, ReadEvent, WriteError};

/// How the client wants event ids encoded in read responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdFormat {
    Structured,
    String,
}

pub(crate) fn stream_name(id: Option<shared::StreamIdentifier>) -> Result<String, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("missing stream identifier"))?;
    String::from_utf8(id.stream_name.to_vec()).map_err(|_| Status::invalid_argument("stream name is not valid UTF-8"))
}

pub(crate) fn stream_identifier(name: &str) -> shared::StreamIdentifier {
    shared::StreamIdentifier { stream_name: Bytes::copy_from_slice(name.as_bytes()) }
}

pub(crate) fn uuid_from_wire(id: Option<shared::Uuid>) -> Result<Uuid, Status> {
    match id.and_then(|id| id.value) {
        Some(shared::uuid::Value::Structured(s)) => {
            let high = (s.most_significant_bits as u64 as u128) << 64;
            Ok(Uuid::from_u128(high | s.least_significant_bits as u64 as u128))
        }
        Some(shared::uuid::Value::String(s)) => {
            s.parse().map_err(|_| Status::invalid_argument(format!("'{s}' is not a valid UUID")))
        }
        None => Err(Status::invalid_argument("missing UUID")),
    }
}

pub(crate) fn uuid_to_wire(id: Uuid, format: IdFormat) -> shared::Uuid {
    let value = match format {
        IdFormat::String => shared::uuid::Value::String(id.hyphenated().to_string()),
        IdFormat::Structured => {
            let n = id.as_u128();
            shared::uuid::Value::Structured(shared::uuid::Structured {
                most_significant_bits: (n >> 64) as u64 as i64,
                least_significant_bits: n as u64 as i64,
            })
        }
    };
    shared::Uuid { value: Some(value) }
}

/// Builds a store event from a proposed message's parts. `type` and
/// `content-type` are required metadata, as in EventStoreDB.
pub(crate) fn proposed_event(
    id: Option<shared::Uuid>,
    mut metadata: HashMap<String, String>,
    custom_metadata: Bytes,
    data: Bytes,
) -> Result<ProposedEvent, Status> {
    let id = uuid_from_wire(id)?;
    let mut required = |key: &str| {
        metadata.remove(key).ok_or_else(|| {
            let mut map = MetadataMap::new();
            map.insert("exception", MetadataValue::from_static("missing-required-metadata-property"));
            if let Ok(value) = MetadataValue::try_from(key) {
                map.insert("required-properties", value);
            }
            Status::with_metadata(Code::InvalidArgument, format!("event {id} has no '{key}' metadata"), map)
        })
    };
    let event_type = required("type")?;
    let content_type = required("content-type")?;
    if event_type.is_empty() {
        return Err(Status::invalid_argument(format!("event {id} has an empty type")));
    }
    Ok(ProposedEvent { id, event_type, content_type, metadata: custom_metadata, data })
}

pub(crate) fn read_event(read: &ReadEvent, ids: IdFormat) -> read_resp::ReadEvent {
    let event = &read.event;
    let metadata = HashMap::from([
        ("type".to_owned(), event.event_type.clone()),
        ("content-type".to_owned(), event.content_type.clone()),
        ("created".to_owned(), event.created.to_string()),
    ]);
    let recorded = read_resp::read_event::RecordedEvent {
        id: Some(uuid_to_wire(event.id, ids)),
        stream_identifier: Some(stream_identifier(&event.stream)),
        stream_revision: event.revision,
        prepare_position: read.position,
        commit_position: read.position,
        metadata,
        custom_metadata: event.metadata.clone(),
        data: event.data.clone(),
    };
    read_resp::ReadEvent {
        event: Some(recorded),
        link: None,
        position: Some(read_resp::read_event::Position::CommitPosition(read.position)),
    }
}

pub(crate) fn exception(
    code: Code,
    message: String,
    exception: &'static str,
    extra: &[(&'static str, String)],
) -> Status {
    let mut map = MetadataMap::new();
    map.insert("exception", MetadataValue::from_static(exception));
    for (key, value) in extra {
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            map.insert(*key, value);
        }
    }
    Status::with_metadata(code, message, map)
}

pub(crate) fn stream_deleted(stream: &str) -> Status {
    exception(
        Code::FailedPrecondition,
        format!("Event stream '{stream}' is deleted."),
        "stream-deleted",
        &[("stream-name", stream.to_owned())],
    )
}

pub(crate) fn unavailable(what: impl std::fmt::Display) -> Status {
    Status::unavailable(what.to_string())
}

/// The status for a refused delete, tombstone, or (except wrong expected
/// version, which travels in the response body) append.
pub(crate) fn write_error_status(stream: &str, error: WriteError) -> Status {
    match error {
        WriteError::WrongExpectedVersion { current, expected } => exception(
            Code::FailedPrecondition,
            format!(
                "Append failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {}, Actual version: {}",
                expected_text(expected),
                current_text(current)
            ),
            "wrong-expected-version",
            &[
                ("stream-name", stream.to_owned()),
                ("expected-version", expected_text(expected)),
                ("actual-version", current_text(current)),
            ],
        ),
        WriteError::StreamDeleted(stream) => stream_deleted(&stream),
        WriteError::TooLarge { max, .. } => exception(
            Code::InvalidArgument,
            format!("Maximum Append Size of {max} Exceeded."),
            "maximum-append-size-exceeded",
            &[("maximum-append-size", max.to_string())],
        ),
        WriteError::Invalid(message) => Status::invalid_argument(message),
        WriteError::Unavailable(message) => Status::unavailable(message),
    }
}

fn expected_text(expected: ExpectedRevision) -> String {
    match expected {
        ExpectedRevision::Any => "-2".into(),
        ExpectedRevision::NoStream => "-1".into(),
        ExpectedRevision::StreamExists => "-4".into(),
        ExpectedRevision::Exact(n) => n.to_string(),
    }
}

fn current_text(current: CurrentRevision) -> String {
    match current {
        CurrentRevision::NoStream => "-1".into(),
        CurrentRevision::Current(n) => n.to_string(),
    }
}

/// The typed `google.rpc.Status` a batch append reports a failure with.
pub(crate) fn batch_error(stream: &str, error: WriteError) -> rpc::Status {
    fn packed<M: Message>(code: Code, message: String, name: &str, detail: M) -> rpc::Status {
        rpc::Status {
            code: code as i32,
            message,
            details: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/event_store.client.{name}"),
                value: detail.encode_to_vec(),
            }),
        }
    }
    let message = error.to_string();
    match error {
        WriteError::WrongExpectedVersion { current, expected } => {
            use shared::wrong_expected_version::{CurrentStreamRevisionOption as C, ExpectedStreamPositionOption as E};
            let detail = shared::WrongExpectedVersion {
                current_stream_revision_option: Some(match current {
                    CurrentRevision::NoStream => C::CurrentNoStream(()),
                    CurrentRevision::Current(n) => C::CurrentStreamRevision(n),
                }),
                expected_stream_position_option: Some(match expected {
                    ExpectedRevision::Any => E::ExpectedAny(()),
                    ExpectedRevision::NoStream => E::ExpectedNoStream(()),
                    ExpectedRevision::StreamExists => E::ExpectedStreamExists(()),
                    ExpectedRevision::Exact(n) => E::ExpectedStreamPosition(n),
                }),
            };
            packed(Code::FailedPrecondition, message, "WrongExpectedVersion", detail)
        }
        WriteError::StreamDeleted(_) => packed(
            Code::FailedPrecondition,
            message,
            "StreamDeleted",
            shared::StreamDeleted { stream_identifier: Some(stream_identifier(stream)) },
        ),
        WriteError::TooLarge { max, .. } => packed(
            Code::InvalidArgument,
            message,
            "MaximumAppendSizeExceeded",
            shared::MaximumAppendSizeExceeded { max_append_size: max as u32 },
        ),
        WriteError::Invalid(reason) => {
            packed(Code::InvalidArgument, message, "BadRequest", shared::BadRequest { message: reason })
        }
        WriteError::Unavailable(_) => packed(Code::Unavailable, message, "Unknown", shared::Unknown {}),
    }
}

/// The typed status for a batch whose deadline passed before it was written.
pub(crate) fn batch_timeout() -> rpc::Status {
    rpc::Status {
        code: Code::DeadlineExceeded as i32,
        message: "the append's deadline passed before it was written".into(),
        details: Some(prost_types::Any {
            type_url: "type.googleapis.com/event_store.client.Timeout".into(),
            value: shared::Timeout {}.encode_to_vec(),
        }),
    }
}
