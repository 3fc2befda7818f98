//! Unit tests of the runtime's pure parts: the host's side of the write
//! rules (the harness's side is `guest-sdk/tests/harness_rules.rs`), the
//! memory cap's record of refusals, and trap classification.
//!
//! Running real modules is the integration tests' job (`tests/tests/it/runtime.rs`).

use std::time::Duration;

use projector_guest_sdk::rules::{self, MAX_COLLECTION_BYTES, MAX_KEY_BYTES};
use wasmtime::ResourceLimiter;

use super::bindings::projector::projection::read_model::{self, Host as _};
use super::host::HostState;
use super::limiter::MemoryCap;
use super::{classify, Fault, Limits};

const NAME_MESSAGE: &str = "collection must be 1-256 bytes and key 1-1024 bytes";

fn state() -> HostState {
    HostState::new(&Limits::default(), "test".into())
}

/// The message of the host's `invalid-name` refusal for this put, if it refused one.
fn invalid_name(state: &mut HostState, collection: &str, key: &str) -> Option<String> {
    match state.put(collection.into(), key.into(), "{}".into()).expect("no trap") {
        Err(read_model::WriteError::InvalidName(message)) => Some(message),
        _ => None,
    }
}

#[test]
fn the_host_refuses_too_long_and_empty_names_with_the_sdks_message() {
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let long_collection = "c".repeat(MAX_COLLECTION_BYTES + 1);
    let mut state = state();
    for (collection, key) in [("c", long_key.as_str()), (long_collection.as_str(), "k"), ("", "k"), ("c", "")] {
        let refused = invalid_name(&mut state, collection, key);
        assert_eq!(refused.as_deref(), Some(NAME_MESSAGE), "{} / {} bytes", collection.len(), key.len());
        let sdk = rules::check_name(collection, key);
        assert_eq!(sdk, Err(projector_guest_sdk::WriteError::InvalidName(NAME_MESSAGE.into())));
    }
    assert!(state.end_batch().is_empty());
}

#[test]
fn the_host_accepts_names_at_the_limits() {
    let mut state = state();
    let (collection, key) = ("c".repeat(MAX_COLLECTION_BYTES), "k".repeat(MAX_KEY_BYTES));
    assert!(matches!(state.put(collection.clone(), key.clone(), "[1]".into()), Ok(Ok(()))));
    assert_eq!(state.end_batch().get(&(collection, key)), Some(&Some("[1]".to_owned())));
}

#[test]
fn the_host_refuses_documents_as_the_sdk_does() {
    let mut state = state();
    let big = format!("\"{}\"", "x".repeat(rules::MAX_DOCUMENT_BYTES));
    let too_large = state.put("c".into(), "k".into(), big).expect("no trap");
    assert!(
        matches!(too_large, Err(read_model::WriteError::TooLarge(limit)) if limit == rules::MAX_DOCUMENT_BYTES as u64)
    );
    let out_of_range = state.put("c".into(), "k".into(), "[1e400]".into()).expect("no trap");
    let sdk = rules::check_document("[1e400]", rules::MAX_DOCUMENT_BYTES);
    match (out_of_range, sdk) {
        (Err(read_model::WriteError::InvalidJson(host)), Err(projector_guest_sdk::WriteError::InvalidJson(sdk))) => {
            assert_eq!(host, sdk)
        }
        (host, sdk) => panic!("host {host:?}, sdk {sdk:?}"),
    }
}

#[test]
fn deleting_under_a_refused_name_writes_nothing() {
    let mut state = state();
    state.delete(String::new(), "k".into()).expect("no trap");
    state.delete("c".into(), "k".repeat(MAX_KEY_BYTES + 1)).expect("no trap");
    assert!(state.end_batch().is_empty());
    state.delete("c".into(), "k".into()).expect("no trap");
    assert_eq!(state.end_batch().get(&("c".to_owned(), "k".to_owned())), Some(&None));
}

#[test]
fn the_memory_cap_records_only_its_own_refusals() {
    let mut cap = MemoryCap::new(1 << 20);
    assert!(matches!(cap.memory_growing(0, 1 << 20, None), Ok(true)));
    assert!(!cap.refused());
    assert!(cap.memory_growing(0, 2 << 20, None).is_err(), "refused growth traps");
    assert!(cap.refused());
    cap.reset();
    assert!(!cap.refused());
    assert!(cap.memory_growing(0, 1 << 19, Some(1 << 18)).is_err(), "past the module's own maximum");
    assert!(!cap.refused(), "the module's own maximum is not the host's cap");
}

#[test]
fn the_memory_cap_counts_every_memory_and_the_table_cap_every_table() {
    let mut cap = MemoryCap::new(64 << 20);
    assert!(matches!(cap.memory_growing(0, 40 << 20, None), Ok(true)), "a first memory of 40 MiB");
    assert!(cap.memory_growing(0, 40 << 20, None).is_err(), "a second one: 80 MiB in all");
    assert!(cap.refused());
    assert!(matches!(cap.memory_growing(40 << 20, 64 << 20, None), Ok(true)), "the first grows to the cap");
    assert!(cap.memory_growing(0, 64 << 10, None).is_err(), "nothing beside it");
    let huge = super::limiter::MAX_TABLE_ELEMENTS;
    assert!(matches!(cap.table_growing(0, huge / 2, None), Ok(true)));
    assert!(cap.table_growing(0, huge / 2 + 1, None).is_err(), "two tables over the cap together");
    assert!(matches!(cap.table_growing(huge / 2, huge, None), Ok(true)), "one table up to the cap");
    assert!(cap.table_growing(huge, huge + 1, None).is_err());
    assert!(cap.memories() < 100 && cap.instances() <= 100 && cap.tables() <= 100, "not wasmtime's 10,000");
}

#[test]
fn log_lines_are_one_line_and_bounded() {
    use super::host::{log_line, MAX_LOG_LINE_BYTES};
    assert_eq!(log_line("plain ünïcode"), "plain ünïcode");
    assert_eq!(log_line("a\nb\r\u{0}c"), "a\\nb\\r\\u{0}c");
    let long = "é".repeat(MAX_LOG_LINE_BYTES);
    let line = log_line(&long);
    assert!(line.len() < MAX_LOG_LINE_BYTES + 64, "{}", line.len());
    assert!(
        line.ends_with(&format!("... [{} more bytes cut]", 2 * MAX_LOG_LINE_BYTES - MAX_LOG_LINE_BYTES)),
        "{}",
        &line[line.len() - 40..]
    );
}

#[test]
fn a_trap_is_a_memory_fault_only_when_the_cap_refused() {
    let limits = Limits { memory_bytes: 1 << 20, ..Limits::default() };
    let looks_like_memory = || wasmtime::Error::msg("in fn grow_memory_limit: memory limit grow");
    assert!(
        matches!(classify(looks_like_memory(), &limits, false), Fault::Trap(text) if text.contains("memory limit"))
    );
    assert_eq!(classify(looks_like_memory(), &limits, true), Fault::MemoryLimit(1 << 20));
    assert_eq!(classify(wasmtime::Error::msg("unreachable"), &limits, true), Fault::MemoryLimit(1 << 20));
}

#[test]
fn an_interrupt_is_a_timeout() {
    let limits = Limits { batch_deadline: Duration::from_millis(30), ..Limits::default() };
    let interrupt = || wasmtime::Error::new(wasmtime::Trap::Interrupt);
    assert_eq!(classify(interrupt(), &limits, false), Fault::Timeout(Duration::from_millis(30)));
    assert_eq!(classify(interrupt(), &limits, true), Fault::Timeout(Duration::from_millis(30)));
}
