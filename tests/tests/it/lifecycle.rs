//! Deploying new versions while the host serves: `continue` swaps, blue/green
//! rebuilds under a query loop, rollback, stop/start/reset/retry/delete,
//! poison events, restarts, and refused uploads and tokens.
//!
//! The `tally` guest records which version applied each event (1.0.0 and
//! 2.0.0 are the same source built twice), so every test can tell exactly
//! which code applied what, and count that nothing was skipped or doubled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use eventstore::{AppendToStreamOptions, EventData};
use projector::status::State;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::tally::{self, V1, V2};
use crate::support::{on_both_backends, Backend, HostEnv};

pub(crate) async fn seen_by(env: &HostEnv, name: &str, id: &str) -> String {
    let (status, body) = env.get(&format!("/projections/{name}/collections/events/{id}")).await;
    assert_eq!(status, StatusCode::OK, "event {id}: {body}");
    body["version"].as_str().expect("version").to_owned()
}

async fn count_events(env: &HostEnv, name: &str) -> u64 {
    let (status, body) = env.get(&format!("/projections/{name}/collections/events?count=true")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["count"].as_u64().expect("count")
}

on_both_backends!(a_continue_swap_runs_new_code_from_the_checkpoint_without_skipping_or_repeating);
async fn a_continue_swap_runs_new_code_from_the_checkpoint_without_skipping_or_repeating(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    let (status, body) = env.deploy("tally", V1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (before, position) = tally::append(&env.events, "tally-a", 50).await;
    tally::total(env.api(), "tally", position).await;

    // Appends keep arriving while the swap happens.
    let writer = env.events.clone();
    let during = tokio::spawn(async move {
        let (mut ids, mut last) = (Vec::new(), 0);
        for n in 0..100 {
            let id = uuid::Uuid::new_v4();
            let written = writer
                .append_to_stream("tally-b", &AppendToStreamOptions::default(), tally::event(n).id(id))
                .await
                .expect("append");
            ids.push(id.to_string());
            last = written.position.commit;
        }
        (ids, last)
    });
    let (status, body) = env.deploy_with("tally", V2, "mode=continue").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], "2.0.0");
    assert_eq!(body["previous"]["version"], "1.0.0");
    assert_eq!(body["previous"]["read_model"], body["read_model"], "a continue swap keeps the read model: {body}");
    let (after, position) = tally::append(&env.events, "tally-c", 50).await;
    let (during, during_last) = during.await.expect("writer");

    // The writer may still have been appending after the last `after` event.
    let total = tally::total(env.api(), "tally", position.max(during_last)).await;
    assert_eq!(total, json!({ "count": 200, "version": "2.0.0" }), "every event applied exactly once");
    assert_eq!(count_events(&env, "tally").await, 200, "one document per event: none skipped");
    for id in &before {
        assert_eq!(seen_by(&env, "tally", id).await, "1.0.0", "applied before the swap");
    }
    for id in &after {
        assert_eq!(seen_by(&env, "tally", id).await, "2.0.0", "appended after the swap was acknowledged");
    }
    // Events appended during the swap: old code up to a batch boundary, new code from there on.
    let mut versions = Vec::new();
    for id in &during {
        versions.push(seen_by(&env, "tally", id).await);
    }
    let switched = versions.iter().position(|v| v == "2.0.0").unwrap_or(versions.len());
    assert!(versions[switched..].iter().all(|v| v == "2.0.0"), "never back to old code: {versions:?}");
    let (_, status) = env.get("/projections/tally").await;
    assert_eq!(status["events_processed"], 200, "{status}");
}

on_both_backends!(a_rebuild_switches_queries_at_once_without_a_failed_query_and_rollback_returns);
async fn a_rebuild_switches_queries_at_once_without_a_failed_query_and_rollback_returns(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    env.deploy("tally", V1).await;
    let mut last = 0;
    for batch in 0..20 {
        last = tally::append(&env.events, &format!("tally-{batch}"), 100).await.1;
    }
    assert_eq!(tally::total(env.api(), "tally", last).await["version"], "1.0.0");

    // A client that queries without pause from before the deploy until after the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let (http, url) = (env.http.clone(), env.url("/projections/tally/collections/totals/all"));
    let looping = stop.clone();
    let queries = tokio::spawn(async move {
        let mut answers: Vec<(StatusCode, String)> = Vec::new();
        while !looping.load(Ordering::Relaxed) {
            let response = http.get(&url).send().await.expect("query");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            answers.push((status, body["version"].as_str().unwrap_or("").to_owned()));
        }
        answers
    });

    let (status, body) = env.deploy_with("tally", V2, "mode=rebuild").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["version"], "1.0.0", "the old version serves until the switch: {body}");
    assert_eq!(body["rebuild"]["version"], "2.0.0", "{body}");
    assert!(body["rebuild"]["total"].as_u64().expect("total") >= 2000, "{body}");
    let (_, live) = tally::append(&env.events, "tally-live", 10).await;
    let switched = env.wait_status("tally", "the switch to 2.0.0", |s| s.version == "2.0.0").await;
    assert_eq!((&switched["version"], &switched["rebuild"]), (&json!("2.0.0"), &Value::Null), "{switched}");
    assert_eq!(switched["previous"]["version"], "1.0.0");
    assert_ne!(
        switched["previous"]["read_model"], switched["read_model"],
        "the rebuild serves a new read model: {switched}"
    );
    let after = tally::total(env.api(), "tally", live).await;
    stop.store(true, Ordering::Relaxed);
    let answers = queries.await.expect("query loop");

    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK), "no failed query: {answers:?}");
    let first_new = answers.iter().position(|(_, v)| v == "2.0.0").unwrap_or(answers.len());
    assert!(first_new > 0, "old answers first");
    assert!(answers[..first_new].iter().all(|(_, v)| v == "1.0.0"), "only old answers before the switch");
    assert!(answers[first_new..].iter().all(|(_, v)| v == "2.0.0"), "only new answers after it");
    assert_eq!(after, json!({ "count": 2010, "version": "2.0.0" }), "rebuilt from the start, live events too");

    // Rollback: the old read model serves again and catches up with what it missed.
    let (status, body) = env.act("tally", "rollback").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], "1.0.0");
    let (_, position) = tally::append(&env.events, "tally-more", 5).await;
    assert_eq!(tally::total(env.api(), "tally", position).await, json!({ "count": 2015, "version": "1.0.0" }));
    // And forward again.
    let (status, body) = env.act("tally", "rollback").await;
    assert_eq!((status, body["version"].as_str()), (StatusCode::OK, Some("2.0.0")), "{body}");
    assert_eq!(tally::total(env.api(), "tally", position).await, json!({ "count": 2015, "version": "2.0.0" }));
}

on_both_backends!(stop_start_reset_and_delete);
async fn stop_start_reset_and_delete(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    env.deploy("tally", V1).await;
    let (_, position) = tally::append(&env.events, "tally-a", 10).await;
    tally::total(env.api(), "tally", position).await;

    let (status, body) = env.act("tally", "stop").await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("stopped")), "{body}");
    let (_, position) = tally::append(&env.events, "tally-a", 5).await;
    let (status, body) = env.get(&format!("/projections/tally/collections/totals/all?at_least={position}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a stopped projection will not get there: {body}");
    let (_, body) = env.get("/projections/tally/collections/totals/all").await;
    assert_eq!(body["count"], 10, "queries are still answered while stopped");
    let (status, body) = env.act("tally", "retry").await;
    assert_eq!(status, StatusCode::CONFLICT, "retry is for faults: {body}");

    let (status, _) = env.act("tally", "start").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tally::total(env.api(), "tally", position).await["count"], 15);

    let (status, body) = env.act("tally", "reset").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tally::total(env.api(), "tally", position).await["count"], 15, "rebuilt from scratch, each event once");
    let (_, body) = env.get("/projections/tally").await;
    assert_eq!(body["events_processed"], 15, "{body}");

    let response =
        env.http.delete(env.url("/projections/tally")).bearer_auth(env.token()).send().await.expect("delete");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = env.get("/projections/tally").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(env.stored_readmodels("tally").await, 0, "read models removed");
    assert_eq!(env.stored_modules().await, 0, "the module is removed with the last projection using it");
    let (status, body) = env.deploy("tally", V1).await;
    assert_eq!(status, StatusCode::CREATED, "the name can be used again: {body}");
    assert_eq!(tally::total(env.api(), "tally", position).await["count"], 15);
}

on_both_backends!(poison_events_fault_the_projection_or_become_dead_letters);
async fn poison_events_fault_the_projection_or_become_dead_letters(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    let (status, body) = env.deploy_with("skipping", V1, "on_error=skip").await;
    assert_eq!((status, body["on_error"].as_str()), (StatusCode::CREATED, Some("skip")), "{body}");
    env.deploy("strict", V1).await;

    tally::append(&env.events, "tally-a", 2).await;
    let poison = EventData::json("TallyPoison", &json!({})).expect("event");
    let bad = env.events.append_to_stream("tally-p", &AppendToStreamOptions::default(), poison).await.expect("append");
    let (_, position) = tally::append(&env.events, "tally-a", 2).await;

    assert_eq!(
        tally::total(env.api(), "skipping", position).await["count"],
        4,
        "the poison event is skipped, the rest applied"
    );
    let (status, letters) = env.get("/projections/skipping/dead-letters").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        letters,
        json!({ "items": [{ "position": bad.position.commit, "stream": "tally-p", "revision": 0,
                            "event_type": "TallyPoison", "error": "invalid event: this event is poison" }],
                "next_after": null })
    );
    let (_, status) = env.get("/projections/skipping").await;
    assert_eq!((status["dead_letters"].as_u64(), status["state"].as_str()), (Some(1), Some("running")), "{status}");

    let strict = env.wait_status("strict", "the strict projection to fault", |s| s.state == State::Faulted).await;
    assert_eq!(strict["fault"]["position"], bad.position.commit, "{strict}");
    assert!(strict["checkpoint"].as_u64().is_none_or(|c| c < bad.position.commit), "nothing past it: {strict}");
    // The same code faults again on retry; a deploy that skips gets past it.
    let (status, _) = env.act("strict", "retry").await;
    assert_eq!(status, StatusCode::OK);
    env.wait_status("strict", "the retry to fault again", |s| s.state == State::Faulted).await;
    let (status, body) = env.deploy_with("strict", V2, "on_error=skip").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tally::total(env.api(), "strict", position).await, json!({ "count": 4, "version": "2.0.0" }));
}

on_both_backends!(a_restarted_host_brings_every_projection_back_as_it_was);
async fn a_restarted_host_brings_every_projection_back_as_it_was(backend: Backend) {
    let mut env = HostEnv::start_on(backend).await;
    // Only `faulted` stops at the poison event; the others skip it.
    env.deploy_with("swapped", V1, "on_error=skip").await;
    env.deploy_with("stopped", V1, "on_error=skip").await;
    env.deploy_with("faulted", V1, "memory_mb=32&batch_timeout_ms=2000").await;
    let (_, position) = tally::append(&env.events, "tally-a", 20).await;
    tally::total(env.api(), "swapped", position).await;
    tally::total(env.api(), "stopped", position).await;
    env.deploy_with("swapped", V2, "mode=continue").await;
    env.act("stopped", "stop").await;
    let poison = EventData::json("TallyPoison", &json!({})).expect("event");
    env.events.append_to_stream("tally-p", &AppendToStreamOptions::default(), poison).await.expect("append");
    env.wait_status("faulted", "the fault", |s| s.state == State::Faulted).await;
    let (_, position) = tally::append(&env.events, "tally-a", 5).await;
    tally::total(env.api(), "swapped", position).await;
    let (_, before) = env.get("/projections").await;

    env.restart_host().await;
    let (_, after) = env.get("/projections").await;
    let stable = |list: &Value| -> Vec<Value> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|s| {
                json!([
                    s["name"],
                    s["version"],
                    s["checkpoint"],
                    s["events_processed"],
                    s["fault"],
                    s["on_error"],
                    s["limits"],
                    s["limits_set"],
                    s["read_model"],
                    s["previous"],
                    s["state"] == "stopped",
                    s["state"] == "faulted"
                ])
            })
            .collect()
    };
    assert_eq!(stable(&after), stable(&before), "every projection as it was:\n{before}\n{after}");
    assert_eq!(after[0]["limits_set"], json!({ "memory_mb": 32, "batch_timeout_ms": 2000 }), "{after}");
    assert_eq!(after[0]["limits"]["memory_mb"], 32, "{after}");
    assert_eq!(after[0]["limits"]["document_bytes"], 1 << 20, "the host's default, in force: {after}");

    // The swapped one keeps running its new code; the stopped one stays stopped.
    let (ids, position) = tally::append(&env.events, "tally-z", 1).await;
    assert_eq!(tally::total(env.api(), "swapped", position).await["count"], 26);
    assert_eq!(seen_by(&env, "swapped", &ids[0]).await, "2.0.0");
    let (_, stopped) = env.get("/projections/stopped").await;
    assert_eq!((stopped["state"].as_str(), stopped["events_processed"].as_u64()), (Some("stopped"), Some(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_and_wrong_tokens_are_refused_and_the_running_version_is_untouched() {
    let env = HostEnv::start().await;
    env.deploy("tally", V1).await;
    let (_, position) = tally::append(&env.events, "tally-a", 3).await;
    tally::total(env.api(), "tally", position).await;
    let (_, before) = env.get("/projections/tally").await;

    let v2 = std::fs::read(V2).expect("module");
    let url = |path: &str| env.url(path);
    let mutations = [
        env.http.put(url("/projections/tally?mode=continue")).body(v2.clone()),
        env.http.put(url("/projections/other")).body(v2.clone()),
        // Larger than the socket buffers: the answer must still be the 401,
        // not a broken pipe while the client is sending.
        env.http.put(url("/projections/other")).body(vec![0u8; 12 << 20]),
        env.http.delete(url("/projections/tally")),
        env.http.post(url("/projections/tally/stop")),
        env.http.post(url("/projections/tally/start")),
        env.http.post(url("/projections/tally/reset")),
        env.http.post(url("/projections/tally/retry")),
        env.http.post(url("/projections/tally/rollback")),
    ];
    for request in mutations {
        for token in [None, Some("wrong"), Some("")] {
            let request = request.try_clone().expect("clonable");
            let request = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "token {token:?}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }

    let mut truncated = v2.clone();
    truncated.truncate(v2.len() / 2);
    let uploads: [(&str, Vec<u8>, StatusCode, &str); 6] = [
        ("mode=continue", b"not wasm at all".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "not_wasm"),
        ("mode=continue", truncated, StatusCode::UNPROCESSABLE_ENTITY, "invalid_module"),
        ("mode=rebuild", crate::runtime::wasi_importing_module(), StatusCode::UNPROCESSABLE_ENTITY, "forbidden_import"),
        ("mode=sideways", v2.clone(), StatusCode::BAD_REQUEST, "invalid_parameter"),
        ("memory_mb=0", v2.clone(), StatusCode::BAD_REQUEST, "invalid_parameter"),
        ("mode=continue", vec![0; 100 << 20], StatusCode::PAYLOAD_TOO_LARGE, "module_too_large"),
    ];
    for (query, bytes, expected, code) in uploads {
        // A client of its own: the server may close the connection after
        // answering early (413), and a pooled connection would be reused.
        let response = reqwest::Client::new()
            .put(env.url(&format!("/projections/tally?{query}")))
            .bearer_auth(env.token())
            .body(bytes)
            .send()
            .await
            .expect("put");
        assert_eq!(response.status(), expected, "{query}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }

    let (_, after) = env.get("/projections/tally").await;
    assert_eq!(after, before, "nothing changed");
    let (_, all) = env.get("/projections").await;
    assert_eq!(all.as_array().expect("list").len(), 1, "nothing deployed by a refused request");
    let (_, position) = tally::append(&env.events, "tally-a", 1).await;
    assert_eq!(
        tally::total(env.api(), "tally", position).await,
        json!({ "count": 4, "version": "1.0.0" }),
        "still running v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_too_small_for_the_module_are_refused_at_deploy() {
    let env = HostEnv::start().await;
    let (status, body) = env.deploy_with("tally", V1, "memory_mb=1").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_module")));
    assert!(body["error"]["message"].as_str().expect("message").contains("limits"), "{body}");
    let (status, _) = env.get("/projections/tally").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing deployed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_token_guards_reads_and_the_admin_token_opens_them_too() {
    let env = HostEnv::start_with_query_token(Some("reader-secret-0123")).await;
    let (status, body) = env.deploy("tally", V1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let paths = [
        "/projections",
        "/projections/tally",
        "/projections/tally/collections/totals",
        "/projections/tally/dead-letters",
        "/metrics",
    ];
    for path in paths {
        for token in [None, Some("wrong")] {
            let request = env.http.get(env.url(path));
            let request = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            assert_eq!(request.send().await.expect("get").status(), StatusCode::UNAUTHORIZED, "{path} {token:?}");
        }
        for token in ["reader-secret-0123".to_owned(), env.token()] {
            let response = env.http.get(env.url(path)).bearer_auth(token).send().await.expect("get");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    }
    let response = env.http.get(env.url("/healthz")).send().await.expect("healthz");
    assert_eq!(response.status(), StatusCode::OK, "health stays open");
    // The reader token cannot change anything.
    let response =
        env.http.post(env.url("/projections/tally/stop")).bearer_auth("reader-secret-0123").send().await.expect("post");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_admin_token_is_kept_owner_only_and_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = HostEnv::start().await;
    let path = projector::admin_token_path(env.data.path());
    let stored = std::fs::read_to_string(&path).expect("token file");
    assert_eq!(stored, env.token());
    assert!(stored.len() >= 64, "long enough to guess never");
    assert_eq!(std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777, 0o600);
    env.restart_host().await;
    assert_eq!(env.token(), stored, "the same token after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_are_stopped_with_a_reason_while_a_healthy_one_keeps_going() {
    let env = HostEnv::start().await;
    env.deploy("inventory", env!("WASM_INVENTORY")).await;
    // Skipping: each hostile event becomes a dead letter with its reason.
    let (status, body) = env.deploy_with("scribbler", env!("WASM_GUEST_SCRIBBLER"), "on_error=skip").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Faulting: the first one stops it, with its reason in the status.
    let (status, body) = env.deploy("strict-scribbler", env!("WASM_GUEST_SCRIBBLER")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let stock = |quantity: i64| {
        EventData::json("StockReceived", &json!({"sku": "pear", "warehouse": "west", "quantity": quantity}))
            .expect("event")
    };
    let hostile = ["Recurse", "BigDocument", "ManyWrites", "HugeDocument", "NotJson"];
    let mut positions = Vec::new();
    for event_type in hostile {
        env.events.append_to_stream("stock-pear", &AppendToStreamOptions::default(), stock(1)).await.expect("append");
        let event = EventData::json(event_type, &json!({})).expect("event");
        let written = env
            .events
            .append_to_stream(format!("scribble-{event_type}"), &AppendToStreamOptions::default(), event)
            .await
            .expect("append");
        positions.push(written.position.commit);
    }
    let last =
        env.events.append_to_stream("stock-pear", &AppendToStreamOptions::default(), stock(1)).await.expect("append");

    // The healthy projection applied every stock event, once.
    let url = format!("/projections/inventory/collections/skus/pear?at_least={}", last.position.commit);
    let (status, pear) = env.get(&url).await;
    assert_eq!((status, &pear["quantity"]), (StatusCode::OK, &json!(hostile.len() + 1)), "{pear}");

    let skipped = env.wait_status("scribbler", "five dead letters", |s| s.dead_letters == 5).await;
    assert_eq!(skipped["dead_letters"], 5, "{skipped}");
    assert_eq!(skipped["state"], "running", "{skipped}");
    let (_, letters) = env.get("/projections/scribbler/dead-letters").await;
    let letters = letters["items"].as_array().expect("items").clone();
    let reasons: Vec<(&str, u64, &str)> = letters
        .iter()
        .map(|l| {
            (
                l["event_type"].as_str().expect("type"),
                l["position"].as_u64().expect("position"),
                l["error"].as_str().expect("error"),
            )
        })
        .collect();
    assert_eq!(
        reasons.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        hostile.into_iter().zip(positions.clone()).collect::<Vec<_>>()
    );
    assert!(reasons[0].2.contains("stack"), "deep recursion: {}", reasons[0].2);
    assert!(
        reasons[1].2.contains("document is larger than the limit of 1048576 bytes"),
        "big document: {}",
        reasons[1].2
    );
    assert!(reasons[2].2.contains("per-batch write limit"), "flood of writes: {}", reasons[2].2);
    eprintln!("100 MiB document: {}", reasons[3].2);
    eprintln!("not JSON: {}", reasons[4].2);
    assert!(reasons[3].2.contains("memory"), "a 100 MiB document in a 64 MiB module: {}", reasons[3].2);
    assert!(reasons[4].2.contains("InvalidJson"), "not JSON: {}", reasons[4].2);
    // Nothing any of them wrote was kept.
    for collection in ["depth", "big", "many", "raw"] {
        let (_, page) = env.get(&format!("/projections/scribbler/collections/{collection}")).await;
        assert_eq!(page["items"], json!([]), "{collection}: {page}");
    }

    let strict = env.wait_status("strict-scribbler", "the fault", |s| s.state == State::Faulted).await;
    assert_eq!(strict["state"], "faulted", "{strict}");
    assert_eq!(strict["fault"]["position"], positions[0], "{strict}");
    assert!(strict["fault"]["reason"].as_str().expect("reason").contains("stack"), "{strict}");
    let response = env.http.get(env.url("/healthz")).send().await.expect("the host is up");
    assert_eq!(response.status(), StatusCode::OK);
}
