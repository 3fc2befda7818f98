//! The Wasm runtime running the real example modules (built from
//! `projections/*` by `tests/build.rs`): it must agree with the native
//! harness, keep a failed batch's writes out, and refuse what is not a
//! projection module.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use projector::runtime::{DeployError, DocumentSource, Event, Fault, Limits, Runtime, Writes};
use projector_guest_sdk::testing::{Harness, TestEvent};
use serde_json::{json, Value};

fn module_bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Committed documents, in memory, standing in for the read-model database.
#[derive(Default)]
struct Committed(Mutex<BTreeMap<(String, String), String>>);

impl DocumentSource for Committed {
    fn get(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.0.lock().expect("lock").get(&(collection.to_owned(), key.to_owned())).cloned())
    }
}

impl Committed {
    fn commit(&self, writes: Writes) {
        let mut documents = self.0.lock().expect("lock");
        for (key, write) in writes {
            match write {
                Some(doc) => documents.insert(key, doc),
                None => documents.remove(&key),
            };
        }
    }

    fn collection(&self, collection: &str) -> BTreeMap<String, Value> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|((c, _), _)| c == collection)
            .map(|((_, k), v)| (k.clone(), serde_json::from_str(v).expect("stored documents are JSON")))
            .collect()
    }
}

fn registration(n: u64, email: &str, day: &str) -> (Event, TestEvent) {
    let data = json!({"userId": format!("u{n}"), "email": email, "username": format!("user{n}"),
                      "passwordHash": "$argon2id$v=19$x", "registeredAt": format!("{day}T08:00:00Z")});
    let metadata = json!({"schemaVersion": 2});
    let event = Event {
        stream_id: format!("user-u{n}"),
        event_type: "UserRegistered".into(),
        event_id: format!("00000000-0000-4000-8000-{n:012x}"),
        stream_revision: 0,
        commit_position: 100 + n,
        created_ms: 0,
        content_type: "application/json".into(),
        data: serde_json::to_vec(&data).expect("json"),
        metadata: serde_json::to_vec(&metadata).expect("json"),
    };
    let test = TestEvent::json("UserRegistered", &data).stream(&format!("user-u{n}")).schema_version(2);
    (event, test)
}

#[test]
fn each_example_module_deploys_and_describes_itself() {
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    for (path, name) in [
        (env!("WASM_USER_DIRECTORY"), "user-directory"),
        (env!("WASM_SIGNUP_STATS"), "signup-stats"),
        (env!("WASM_INVENTORY"), "inventory"),
    ] {
        let module = runtime.compile(&module_bytes(path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(module.description().name, name);
        assert_eq!(module.description().version, "1.0.0");
    }
    let inventory = runtime.compile(&module_bytes(env!("WASM_INVENTORY"))).expect("inventory");
    assert_eq!(inventory.description().stream_prefixes, vec!["stock-".to_owned()]);
    assert!(inventory.description().indexes.contains(&("stock".to_owned(), "sku".to_owned())));
}

#[test]
fn wasm_and_native_runs_of_the_same_projection_write_the_same_documents() {
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let module = runtime.compile(&module_bytes(env!("WASM_SIGNUP_STATS"))).expect("signup-stats");
    let mut instance = runtime.instantiate(&module).expect("instance");
    let committed = Arc::new(Committed::default());
    let mut harness = Harness::<signup_stats::SignupStats>::new();

    let batches = [
        vec![registration(1, "a@example.com", "2026-11-22"), registration(2, "b@EXAMPLE.com", "2026-11-23")],
        vec![registration(3, "c@other.org", "2026-11-23"), registration(4, "d@example.com", "2026-11-23")],
    ];
    for batch in batches {
        let (events, tests): (Vec<Event>, Vec<TestEvent>) = batch.into_iter().unzip();
        let writes = instance.handle_batch(&events, committed.clone()).expect("batch applies");
        committed.commit(writes);
        harness.given(tests).expect("harness applies");
    }
    for collection in ["domains", "days"] {
        assert_eq!(committed.collection(collection), harness.collection(collection), "{collection}");
    }
    assert_eq!(committed.collection("domains")["example.com"], json!({"domain": "example.com", "count": 3}));
}

#[test]
fn a_failing_event_faults_the_batch_and_returns_no_writes() {
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let module = runtime.compile(&module_bytes(env!("WASM_USER_DIRECTORY"))).expect("user-directory");
    let mut instance = runtime.instantiate(&module).expect("instance");
    let (good, _) = registration(1, "a@example.com", "2026-11-23");
    let (mut bad, _) = registration(2, "b@example.com", "2026-11-23");
    bad.data = b"{not json".to_vec();
    let committed = Arc::new(Committed::default());
    let fault = instance.handle_batch(&[good.clone(), bad], committed.clone()).expect_err("faults");
    match fault {
        Fault::Guest { event_index, message } => {
            assert_eq!(event_index, 1);
            assert!(message.starts_with("invalid event"), "{message}");
        }
        other => panic!("expected a guest fault, got {other:?}"),
    }
    // The instance stays usable after a guest error, and reads do not see the failed batch.
    let writes = instance.handle_batch(&[good], committed.clone()).expect("good batch");
    committed.commit(writes);
    assert_eq!(committed.collection("users").len(), 1);
}

#[test]
fn uploads_that_are_not_projection_modules_are_refused() {
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    assert!(matches!(runtime.compile(b"hello"), Err(DeployError::NotWasm)));
    let bytes = module_bytes(env!("WASM_INVENTORY"));
    let truncated = &bytes[..bytes.len() / 2];
    assert!(matches!(runtime.compile(truncated), Err(DeployError::Invalid(_))), "a truncated module is invalid");
    // Cut anywhere, a module is refused with an error, never a panic.
    for sixteenth in 1..16 {
        let cut = &bytes[..bytes.len() * sixteenth / 16];
        assert!(runtime.compile(cut).is_err(), "cut at {sixteenth}/16");
    }
    // A module that imports something outside the contract, named in the error.
    let wasi = wasi_importing_module();
    match runtime.compile(&wasi) {
        Err(DeployError::ForbiddenImport(name)) => assert!(name.contains("wasi_snapshot_preview1"), "{name}"),
        other => panic!("expected a forbidden import, got {other:?}"),
    }
}

/// `(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))`,
/// encoded by hand.
pub(crate) fn wasi_importing_module() -> Vec<u8> {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    // type section: one func type (i32 x4) -> i32
    bytes.extend_from_slice(&[0x01, 0x09, 0x01, 0x60, 0x04, 0x7f, 0x7f, 0x7f, 0x7f, 0x01, 0x7f]);
    // import section
    let module = b"wasi_snapshot_preview1";
    let field = b"fd_write";
    let mut import = vec![0x01, module.len() as u8];
    import.extend_from_slice(module);
    import.push(field.len() as u8);
    import.extend_from_slice(field);
    import.extend_from_slice(&[0x00, 0x00]);
    bytes.push(0x02);
    bytes.push(import.len() as u8);
    bytes.extend_from_slice(&import);
    bytes
}

fn one_event(event_type: &str) -> Event {
    Event {
        stream_id: "s".into(),
        event_type: event_type.into(),
        event_id: "00000000-0000-4000-8000-000000000001".into(),
        stream_revision: 0,
        commit_position: 1,
        created_ms: 0,
        content_type: "application/json".into(),
        data: b"{}".to_vec(),
        metadata: Vec::new(),
    }
}

#[test]
fn an_endless_loop_is_stopped_at_the_batch_deadline() {
    let limits = Limits { batch_deadline: std::time::Duration::from_millis(200), ..Limits::default() };
    let runtime = Runtime::new(limits).expect("runtime");
    let module = runtime.compile(&module_bytes(env!("WASM_GUEST_LOOPING"))).expect("compiles");
    let mut instance = runtime.instantiate(&module).expect("instance");
    let fault = instance.handle_batch(&[one_event("Tick")], Arc::new(Committed::default())).expect_err("stopped");
    assert_eq!(fault, Fault::Timeout(limits.batch_deadline));
    // The runtime is unharmed: another module still runs.
    let healthy = runtime.compile(&module_bytes(env!("WASM_USER_DIRECTORY"))).expect("compiles");
    let (event, _) = registration(1, "a@example.com", "2026-11-23");
    let writes =
        runtime.instantiate(&healthy).expect("instance").handle_batch(&[event], Arc::new(Committed::default()));
    assert!(writes.expect("healthy batch").len() == 2);
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let limits = Limits { memory_bytes: 16 << 20, ..Limits::default() };
    let runtime = Runtime::new(limits).expect("runtime");
    let module = runtime.compile(&module_bytes(env!("WASM_GUEST_HUNGRY"))).expect("compiles");
    let mut instance = runtime.instantiate(&module).expect("instance");
    let fault = instance.handle_batch(&[one_event("Eat")], Arc::new(Committed::default())).expect_err("stopped");
    assert_eq!(fault, Fault::MemoryLimit(16 << 20));
}

#[test]
fn a_panic_traps_and_the_batch_keeps_no_writes_but_its_log_lines_are_shown() {
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let module = runtime.compile(&module_bytes(env!("WASM_GUEST_PANICKING"))).expect("compiles");
    let mut instance = runtime.instantiate(&module).expect("instance");
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish();
    let fault = tracing::subscriber::with_default(subscriber, || {
        instance.handle_batch(&[one_event("Fine"), one_event("Boom")], Arc::new(Committed::default()))
    })
    .expect_err("traps");
    match fault {
        Fault::Trap(message) => assert!(message.contains("unreachable") || message.contains("panic"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    let logged = logs.text();
    let line = logged.lines().find(|l| l.contains("about to fail on s")).unwrap_or_else(|| panic!("{logged}"));
    assert!(line.contains("WARN") && line.contains("projection=\"panicking\""), "{line}");
}

/// Log output captured from a `tracing` subscriber.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> CapturedLogs {
        self.clone()
    }
}

#[test]
fn compiled_modules_are_kept_and_reloaded_and_a_damaged_artifact_is_compiled_again() {
    let cache = tempfile::tempdir().expect("tempdir");
    let bytes = module_bytes(env!("WASM_SIGNUP_STATS"));
    let runtime = || Runtime::new(Limits::default()).expect("runtime").with_artifact_cache(cache.path().to_owned());

    let first = runtime().compile(&bytes).expect("compiles");
    assert!(!first.precompiled());
    let artifacts: Vec<_> =
        std::fs::read_dir(cache.path()).expect("cache dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");

    // A new engine with the same configuration (a restarted host) loads it and runs it.
    let again = runtime();
    let module = again.compile(&bytes).expect("loads");
    assert!(module.precompiled());
    assert_eq!(module.description().name, "signup-stats");
    let (event, _) = registration(1, "a@example.com", "2026-11-23");
    let writes = again.instantiate(&module).expect("instance").handle_batch(&[event], Arc::new(Committed::default()));
    assert_eq!(writes.expect("batch").len(), 2);

    // A torn artifact fails its checksum and is compiled (and stored) again.
    let length = std::fs::metadata(&artifacts[0]).expect("artifact").len();
    std::fs::OpenOptions::new().write(true).open(&artifacts[0]).expect("open").set_len(length / 2).expect("truncate");
    let rebuilt = runtime().compile(&bytes).expect("compiles again");
    assert!(!rebuilt.precompiled());
    assert!(runtime().compile(&bytes).expect("loads").precompiled());

    // Modules that are refused leave nothing behind.
    assert!(runtime().compile(&wasi_importing_module()).is_err());
    assert_eq!(std::fs::read_dir(cache.path()).expect("cache dir").count(), 1);
}

#[test]
fn a_module_built_against_the_0_1_contract_still_runs() {
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let module = runtime.compile(&module_bytes(env!("WASM_GUEST_LEGACY"))).expect("a 0.1.0 module deploys");
    let description = module.description();
    assert_eq!((description.name.as_str(), description.version.as_str()), ("legacy", "0.1.0"));
    assert_eq!(description.event_type_prefixes, ["OrderShipped"]);
    assert!(description.event_types.is_empty(), "0.1.0 has prefixes only");
    assert!(description.wants("order-1", "OrderShippedNotificationSent"), "its prefixes keep their meaning");

    let mut instance = runtime.instantiate(&module).expect("instance");
    let committed = Arc::new(Committed::default());
    // The guest checks that an invalid document comes back as 0.1.0's `invalid-json`.
    let writes = instance.handle_batch(&[one_event("OrderShipped")], committed.clone()).expect("applies");
    committed.commit(writes);
    assert_eq!(committed.collection("seen").into_values().collect::<Vec<_>>(), [json!({"type": "OrderShipped"})]);

    let fault = instance
        .handle_batch(&[one_event("OrderShipped"), one_event("OrderShippedBadly")], committed.clone())
        .expect_err("refused");
    assert_eq!(fault, Fault::Guest { event_index: 1, message: "refused on purpose".into() });
}

#[test]
fn a_current_module_reports_its_exact_event_types() {
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let module = runtime.compile(&module_bytes(env!("WASM_GUEST_SHIPMENTS"))).expect("compiles");
    assert_eq!(module.description().event_types, ["OrderShipped"]);
    assert!(module.description().event_type_prefixes.is_empty());
}

#[test]
fn the_toolchain_that_built_a_module_is_read_from_its_producers() {
    let toolchain = projector::runtime::toolchain(&module_bytes(env!("WASM_USER_DIRECTORY")));
    assert!(toolchain.as_deref().is_some_and(|t| t.starts_with("Rust (rustc 1.")), "{toolchain:?}");
    assert_eq!(projector::runtime::toolchain(b"\0asm\x01\0\0\0"), None, "a module that says nothing");
}

#[test]
fn compiled_functions_are_kept_and_reused_by_later_modules_and_a_damaged_store_is_only_a_miss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("functions.sqlite");
    let rows = || rusqlite_count(&store);
    let runtime = Runtime::with_function_cache(Limits::default(), &store).expect("runtime");
    runtime.compile(&module_bytes(env!("WASM_SIGNUP_STATS"))).expect("compiles");
    let kept = rows();
    assert!(kept > 100, "every compiled function is kept: {kept}");

    // The same module on a new engine (a restarted host without the
    // artifact) compiles every function from the store.
    let restarted = Runtime::with_function_cache(Limits::default(), &store).expect("runtime");
    restarted.compile(&module_bytes(env!("WASM_SIGNUP_STATS"))).expect("compiles");
    assert!(restarted.compiled_function_hits() >= kept, "{} hits of {kept}", restarted.compiled_function_hits());

    // Another engine on the same store (a restarted host) compiles another
    // module, partly from the store, and that module runs correctly.
    let again = Runtime::with_function_cache(Limits::default(), &store).expect("runtime");
    let module = again.compile(&module_bytes(env!("WASM_USER_DIRECTORY"))).expect("compiles");
    let (event, _) = registration(1, "a@example.com", "2026-11-23");
    let writes = again.instantiate(&module).expect("instance").handle_batch(&[event], Arc::new(Committed::default()));
    assert_eq!(writes.expect("batch").len(), 2);
    assert!(rows() > kept, "its own functions were added");

    // A store that is not a database is compiled without, not refused.
    std::fs::write(&store, b"not a database").expect("damage");
    let damaged = Runtime::with_function_cache(Limits::default(), &store).expect("a runtime all the same");
    assert!(damaged.compile(&module_bytes(env!("WASM_SIGNUP_STATS"))).is_ok());
}

/// Rows in the compiled-function store, read with the sqlite3 the host bundles.
fn rusqlite_count(path: &std::path::Path) -> u64 {
    let db = rusqlite::Connection::open(path).expect("open");
    db.query_row("SELECT count(*) FROM functions", [], |row| row.get(0)).expect("count")
}
