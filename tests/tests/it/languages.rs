//! Projections written in other languages, built by their own toolchains
//! (`cargo xtask test` builds them: npm, componentize-js), deployed into the
//! real host beside their Rust twins: the same events must give the same
//! documents, and their errors must reach the status with their own words.
//!
//! Opt-in with `PROJECTOR_GUEST_LANGUAGES=1` because the modules come from
//! Node.js tools (the README's test command builds them and sets it).

use std::path::PathBuf;

use eventstore::EventData;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{register, HostEnv};

/// A module another language's toolchain built, under `projections/`.
fn built(path: &str) -> Option<PathBuf> {
    if std::env::var_os("PROJECTOR_GUEST_LANGUAGES").is_none() {
        eprintln!("skipping: set PROJECTOR_GUEST_LANGUAGES=1 after building the TypeScript and Python examples (cargo xtask test does)");
        return None;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../projections").join(path);
    assert!(path.is_file(), "{} is missing: build it (see the README's Writing a projection)", path.display());
    Some(path)
}

/// The TypeScript `user-directory`, as `npm run build` leaves it.
fn typescript_user_directory() -> Option<PathBuf> {
    built("user-directory-ts/dist/user_directory_ts.wasm")
}

/// The Python `signup-stats`, as `python -m projector_guest.build` leaves it.
fn python_signup_stats() -> Option<PathBuf> {
    built("signup-stats-py/dist/signup_stats_py.wasm")
}

/// Every document of `collection`, as (key, document) pairs in key order.
async fn documents(env: &HostEnv, name: &str, collection: &str, at_least: u64) -> Vec<(String, Value)> {
    let path = format!("/projections/{name}/collections/{collection}?limit=1000&at_least={at_least}");
    let (status, page) = env.api().get_caught_up(&path).await;
    assert_eq!(status, StatusCode::OK, "{name}: {page}");
    assert!(page["next_cursor"].is_null(), "one page holds them all");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| (item["key"].as_str().expect("key").to_owned(), item["doc"].clone()))
        .collect()
}

/// A registration as schema version 1 wrote it: no `registeredAt`, no metadata.
fn version_one(n: u32) -> EventData {
    EventData::json(
        "UserRegistered",
        &json!({"userId": format!("v{n}"), "email": format!("Old{n}@Example.org"), "username": format!("old{n}"),
                "passwordHash": "$argon2id$v=19$old"}),
    )
    .expect("event")
}

/// A host with `rust` and its twin deployed after 20 registrations, then 5
/// version-1 registrations and 10 more of version 2 appended; the host and
/// the last position.
async fn twins_over_the_same_history(rust: (&str, &str), twin: (&str, &str)) -> (HostEnv, u64) {
    let env = HostEnv::start().await;
    for n in 0..20 {
        register(&env, n, &format!("User{n}@Example.com")).await;
    }
    for (name, module) in [rust, twin] {
        let (status, body) = env.deploy(name, module).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }
    let mut last = 0;
    for n in 0..5 {
        let written = env.events.append_to_stream(format!("user-v{n}"), &Default::default(), version_one(n)).await;
        last = written.expect("append").position.commit;
    }
    for n in 20..30 {
        last = register(&env, n, &format!("late{n}@other.org")).await;
    }
    (env, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_user_directory_matches_the_rust_one_document_for_document() {
    let Some(module) = typescript_user_directory() else { return };
    let (env, last) = twins_over_the_same_history(
        ("user-directory", env!("WASM_USER_DIRECTORY")),
        ("user-directory-ts", module.to_str().expect("utf-8")),
    )
    .await;
    for collection in ["users", "emails"] {
        let rust = documents(&env, "user-directory", collection, last).await;
        let typescript = documents(&env, "user-directory-ts", collection, last).await;
        assert_eq!(rust.len(), 35, "{collection}: 30 registrations of version 2, 5 of version 1");
        assert_eq!(typescript, rust, "{collection}: every document the same");
    }
    let upcast = documents(&env, "user-directory-ts", "users", last).await;
    let v0 = upcast.iter().find(|(key, _)| key == "v0").expect("the version 1 user");
    assert!(v0.1["registeredAt"].as_str().is_some_and(|t| t.ends_with('Z')), "the stored time stands in: {v0:?}");
    let (_, status) = env.get("/projections/user-directory-ts").await;
    assert_eq!(status["events_processed"], 35, "{status}");
    assert_eq!(status["module"]["toolchain"], "JavaScript (ComponentizeJS 0.23.0)", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_projections_error_reaches_the_status_and_dead_letters_in_its_own_words() {
    let Some(module) = typescript_user_directory() else { return };
    let env = HostEnv::start().await;
    let module = module.to_str().expect("utf-8");
    let (status, body) = env.deploy("strict", module).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = env.deploy_with("lenient", module, "on_error=skip").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Version 2 without the field version 2 added: zod refuses it.
    let broken = EventData::json(
        "UserRegistered",
        &json!({"userId": "b1", "email": "b@example.com", "username": "b", "passwordHash": "$argon2id$x"}),
    )
    .expect("event")
    .metadata_as_json(&json!({"schemaVersion": 2}))
    .expect("metadata");
    let written = env.events.append_to_stream("user-b1", &Default::default(), broken).await.expect("append");
    let last = register(&env, 1, "fine@example.com").await;

    let faulted = env.wait_status("strict", "the fault", |s| s.fault.is_some()).await;
    let reason = faulted["fault"]["reason"].as_str().expect("reason");
    assert!(reason.starts_with("invalid event: UserRegistered v2 user-b1@0: "), "{reason}");
    assert!(reason.contains("registeredAt"), "zod's own message names the field: {reason}");
    assert_eq!(faulted["fault"]["position"], written.position.commit);

    documents(&env, "lenient", "users", last).await;
    let (status, letters) = env.get("/projections/lenient/dead-letters").await;
    assert_eq!(status, StatusCode::OK, "{letters}");
    let letter = &letters["items"][0];
    assert_eq!(letter["stream"], "user-b1", "{letters}");
    assert!(letter["error"].as_str().is_some_and(|e| e.contains("registeredAt")), "{letters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_size_limit_is_the_hosts_setting() {
    let Some(module) = typescript_user_directory() else { return };
    let size = std::fs::metadata(&module).expect("module").len();
    assert!(size > 12 << 20, "a TypeScript module is large ({size} bytes): the default limit must admit it");
    let env = HostEnv::start().await;
    let (status, body) = env.deploy("user-directory-ts", module.to_str().expect("utf-8")).await;
    assert_eq!(status, StatusCode::CREATED, "the default limit admits it: {body}");

    let small = HostEnv::start_adjusted(|config| config.max_module_bytes = 8 << 20).await;
    let (status, body) = small.deploy("user-directory-ts", module.to_str().expect("utf-8")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "module_too_large", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("8388608")), "{body}");
    let (status, body) = small.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "a small module still deploys: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_signup_stats_matches_the_rust_one_document_for_document() {
    let Some(module) = python_signup_stats() else { return };
    let (env, last) = twins_over_the_same_history(
        ("signup-stats", env!("WASM_SIGNUP_STATS")),
        ("signup-stats-py", module.to_str().expect("utf-8")),
    )
    .await;
    for collection in ["domains", "days"] {
        let rust = documents(&env, "signup-stats", collection, last).await;
        let python = documents(&env, "signup-stats-py", collection, last).await;
        assert!(!rust.is_empty(), "{collection}");
        assert_eq!(python, rust, "{collection}: every document the same");
    }
    let (_, status) = env.get("/projections/signup-stats-py").await;
    assert!(
        status["module"]["toolchain"].as_str().is_some_and(|t| t.starts_with("Python (componentize-py, CPython 3.")),
        "{status}"
    );
    let domains = documents(&env, "signup-stats-py", "domains", last).await;
    assert_eq!(domains.len(), 3, "example.com, example.org (version 1), other.org: {domains:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_projections_error_reaches_the_status_in_its_own_words() {
    let Some(module) = python_signup_stats() else { return };
    let env = HostEnv::start().await;
    let (status, body) = env.deploy("signup-stats-py", module.to_str().expect("utf-8")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let no_domain = EventData::json(
        "UserRegistered",
        &json!({"userId": "n1", "email": "nobody", "username": "n", "passwordHash": "$argon2id$x", "registeredAt": "2026-11-23T09:00:00Z"}),
    )
    .expect("event")
    .metadata_as_json(&json!({"schemaVersion": 2}))
    .expect("metadata");
    let written = env.events.append_to_stream("user-n1", &Default::default(), no_domain).await.expect("append");
    let faulted = env.wait_status("signup-stats-py", "the fault", |s| s.fault.is_some()).await;
    assert_eq!(faulted["fault"]["reason"], "invalid event: 'nobody' has no email domain", "{faulted}");
    assert_eq!(faulted["fault"]["position"], written.position.commit);
}

/// The misbehaving TypeScript modules (`tests/guests-ts`, built by `npm run build` there).
fn hostile_typescript(name: &str) -> Option<PathBuf> {
    let path = built(&format!("../tests/guests-ts/dist/{name}.wasm"))?;
    Some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_modules_that_loop_eat_memory_or_throw_are_stopped_with_a_reason_while_a_healthy_one_goes_on() {
    let (Some(looping), Some(hungry), Some(throwing)) =
        (hostile_typescript("looping"), hostile_typescript("hungry"), hostile_typescript("throwing"))
    else {
        return;
    };
    let env = HostEnv::start().await;
    let (status, body) = env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (name, module, query) in [
        ("looping", &looping, "batch_timeout_ms=500"),
        ("hungry", &hungry, "memory_mb=128"),
        ("throwing", &throwing, ""),
    ] {
        let (status, body) = env.deploy_with(name, module.to_str().expect("utf-8"), query).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }
    let hostile = EventData::json("Anything", &json!({})).expect("event");
    let written = env.events.append_to_stream("hostile-1", &Default::default(), hostile).await.expect("append");

    let reason = |status: &Value| status["fault"]["reason"].as_str().expect("a reason").to_owned();
    let looped = env.wait_status("looping", "the deadline", |s| s.fault.is_some()).await;
    assert_eq!(reason(&looped), "the batch ran longer than 500ms", "{looped}");
    let ate = env.wait_status("hungry", "the memory cap", |s| s.fault.is_some()).await;
    assert!(reason(&ate).contains("memory"), "{ate}");
    let threw = env.wait_status("throwing", "the throw", |s| s.fault.is_some()).await;
    assert_eq!(reason(&threw), r#"threw {"refused":"hostile-1"}"#, "{threw}");
    for status in [&looped, &ate, &threw] {
        assert_eq!(status["fault"]["position"], written.position.commit, "{status}");
    }

    // The healthy projection went on meanwhile, and still does.
    let last = register(&env, 1, "after@example.com").await;
    let (status, user) = env.get(&format!("/projections/user-directory/collections/users/u1?at_least={last}")).await;
    assert_eq!(status, StatusCode::OK, "{user}");
}

/// A projection rewritten in TypeScript replaces its Rust version by a
/// `continue` swap, under a client querying without pause: no query fails,
/// and the new code carries on from the checkpoint on the same read model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continue_swap_to_a_typescript_module_fails_no_query() {
    let Some(module) = typescript_user_directory() else { return };
    let env = HostEnv::start().await;
    let (status, body) = env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut last = 0;
    for n in 0..10 {
        last = register(&env, n, &format!("u{n}@example.com")).await;
    }
    documents(&env, "user-directory", "users", last).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (http, url) = (env.http.clone(), env.url("/projections/user-directory/collections/users/u3"));
    let querying = stop.clone();
    let queries = tokio::spawn(async move {
        let mut answers = Vec::new();
        while !querying.load(std::sync::atomic::Ordering::Relaxed) {
            let response = http.get(&url).send().await.expect("query");
            answers.push((std::time::Instant::now(), response.status()));
        }
        answers
    });
    let started = std::time::Instant::now();
    let (status, body) = env.deploy_with("user-directory", module.to_str().expect("utf-8"), "mode=continue").await;
    let finished = std::time::Instant::now();
    let swap = finished - started;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["read_model"], body["previous"]["read_model"], "the same read model: {body}");
    let last = register(&env, 10, "after@example.com").await;
    let users = documents(&env, "user-directory", "users", last).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = queries.await.expect("query loop");
    eprintln!("continue swap to the TypeScript module: {swap:?}, {} queries meanwhile", answers.len());
    let during = answers.iter().filter(|(at, _)| (started..finished).contains(at)).count();
    assert!(during > 0, "queries were answered while the swap ran");
    let failed: Vec<_> = answers.iter().filter(|(_, status)| *status != StatusCode::OK).collect();
    assert!(failed.is_empty(), "every query answered: {failed:?}");
    assert_eq!(users.len(), 11, "the TypeScript code applied the event after the swap");
}
