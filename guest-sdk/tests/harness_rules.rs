//! The harness refuses the writes the host refuses, with the host's message.
//! The host's side of the same inputs is `host/src/runtime/tests.rs`.

use projector_guest_sdk::rules::{self, MAX_COLLECTION_BYTES, MAX_KEY_BYTES};
use projector_guest_sdk::testing::{Harness, TestEvent};
use projector_guest_sdk::{BatchError, Description, Error, Event, Projection, ReadModel, Result, WriteError};
use serde_json::{json, Value};

/// Writes (or, with `"delete": true`, deletes) `document` under the event's
/// `collection` and `key`.
struct Writer;

impl Projection for Writer {
    fn description() -> Description {
        Description::new("writer", "1.0.0")
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        let write: Value = event.json()?;
        let collection = write["collection"].as_str().unwrap_or_default();
        let key = write["key"].as_str().unwrap_or_default();
        if write["delete"] == json!(true) {
            model.delete(collection, key);
            return Ok(());
        }
        model.put(collection, key, &write["document"])
    }
}

fn put(collection: &str, key: &str, document: Value) -> TestEvent {
    TestEvent::json("Write", &json!({ "collection": collection, "key": key, "document": document }))
}

fn delete(collection: &str, key: &str) -> TestEvent {
    TestEvent::json("Write", &json!({ "collection": collection, "key": key, "delete": true }))
}

/// The error the harness gives for a write refused with `refusal`.
fn refused(collection: &str, key: &str, refusal: WriteError) -> BatchError {
    BatchError { event_index: 0, error: Error::ReadModel(format!("{collection}/{key}: {refusal}")) }
}

const NAME_MESSAGE: &str = "collection must be 1-256 bytes and key 1-1024 bytes";

#[test]
fn too_long_and_empty_names_are_refused_with_the_hosts_message() {
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let long_collection = "c".repeat(MAX_COLLECTION_BYTES + 1);
    for (collection, key) in [("c", long_key.as_str()), (long_collection.as_str(), "k"), ("", "k"), ("c", "")] {
        let mut harness = Harness::<Writer>::new();
        let error = harness.given([put(collection, key, json!(1))]).expect_err("refused");
        let message = WriteError::InvalidName(NAME_MESSAGE.into());
        assert_eq!(error, refused(collection, key, message), "{} / {} bytes", collection.len(), key.len());
        assert_eq!(rules::check_name(collection, key), Err(WriteError::InvalidName(NAME_MESSAGE.into())));
        assert!(harness.collections().is_empty());
    }
}

#[test]
fn names_at_the_limits_are_accepted() {
    let key = "k".repeat(MAX_KEY_BYTES);
    let collection = "c".repeat(MAX_COLLECTION_BYTES);
    let mut harness = Harness::<Writer>::new();
    harness.given([put(&collection, &key, json!({"ok": true}))]).expect("accepted");
    assert_eq!(harness.document(&collection, &key), Some(&json!({"ok": true})));
}

#[test]
fn deleting_under_a_refused_name_removes_nothing_and_is_not_an_error() {
    let mut harness = Harness::<Writer>::new();
    harness.given([put("c", "k", json!(1)), delete("", "k"), delete("c", &"k".repeat(MAX_KEY_BYTES + 1))]).expect("ok");
    assert_eq!(harness.document("c", "k"), Some(&json!(1)));
    harness.given([delete("c", "k")]).expect("ok");
    assert!(harness.collections().is_empty());
}

#[test]
fn documents_over_the_limit_are_refused_and_the_limit_can_be_lowered() {
    let big = "x".repeat(rules::MAX_DOCUMENT_BYTES);
    let mut harness = Harness::<Writer>::new();
    let error = harness.given([put("c", "k", json!(big))]).expect_err("too large");
    assert_eq!(error, refused("c", "k", WriteError::TooLarge(rules::MAX_DOCUMENT_BYTES as u64)));

    let mut small = Harness::<Writer>::new().max_document_bytes(8);
    small.given([put("c", "k", json!("123456"))]).expect("8 bytes with the quotes");
    let error = small.given([put("c", "k", json!("1234567"))]).expect_err("9 bytes");
    assert_eq!(error, refused("c", "k", WriteError::TooLarge(8)));
}

#[test]
#[allow(deprecated)]
fn the_old_default_limit_is_the_rule() {
    assert_eq!(projector_guest_sdk::testing::DEFAULT_MAX_DOCUMENT_BYTES, rules::MAX_DOCUMENT_BYTES);
}
