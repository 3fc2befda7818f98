//! End to end: the embedded event store and the host in-process on loopback
//! ports, events appended with the official client, answers read over HTTP.

use eventstore::EventData;
use projector::status::State;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{on_both_backends, register, Backend, HostEnv};

on_both_backends!(a_deployed_projection_serves_documents_built_from_appended_events);
async fn a_deployed_projection_serves_documents_built_from_appended_events(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    register(&env, 1, "ada@example.com").await;
    let (status, body) = env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "user-directory");
    register(&env, 2, "Bob@Example.com").await;
    let last = register(&env, 3, "cy@example.org").await;

    // Read-your-writes: at_least waits until the projection has applied the append.
    let (status, user) = env.get(&format!("/projections/user-directory/collections/users/u3?at_least={last}")).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(
        user,
        json!({"id": "u3", "email": "cy@example.org", "username": "user3", "registeredAt": "2026-11-23T09:00:00Z"})
    );
    let (status, entry) = env.get("/projections/user-directory/collections/emails/bob@example.com").await;
    assert_eq!((status, entry), (StatusCode::OK, json!({"userId": "u2"})));

    // Paging with an opaque cursor.
    let (status, page) = env.get("/projections/user-directory/collections/users?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&str> =
        page["items"].as_array().expect("items").iter().map(|i| i["key"].as_str().expect("key")).collect();
    assert_eq!(keys, ["u1", "u2"]);
    let cursor = page["next_cursor"].as_str().expect("a next cursor");
    let (_, rest) = env.get(&format!("/projections/user-directory/collections/users?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"][0]["key"], "u3");
    assert_eq!(rest["next_cursor"], Value::Null);

    let (status, all) = env.get("/projections").await;
    assert_eq!(status, StatusCode::OK);
    let listed = &all.as_array().expect("list")[0];
    assert_eq!(listed["name"], "user-directory");
    assert_eq!(listed["events_processed"], 3);
    assert!(listed["checkpoint"].as_u64().expect("checkpoint") >= last);
    assert!(!all.to_string().contains("argon2"), "no password hash anywhere");
}

on_both_backends!(bad_requests_get_clear_errors_and_change_nothing);
async fn bad_requests_get_clear_errors_and_change_nothing(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    let (status, body) = env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let put = |path: &str| env.http.put(env.url(path)).bearer_auth(env.token());
    let response = put("/projections/junk").body("not wasm").send().await.expect("put");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_wasm");
    let response = put("/projections/Bad..Name").body("x").send().await.expect("put");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, body) = env.get("/projections/nope").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_projection")));
    let (status, body) = env.get("/projections/user-directory/collections/users/missing").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, body) = env.get("/projections/user-directory/collections/users?cursor=zz").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_cursor")));
    let (status, _) = env.get("/projections/user-directory/collections/users?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // What axum's routing and extractors refuse comes back in the same JSON shape.
    let (status, body) = env.get("/projections/user-directory/dead-letters?after=minus-one").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    assert!(body["error"]["message"].as_str().expect("message").contains("after"), "{body}");
    let (status, body) = env.get("/projections/user-directory/collections/users/u1?at_least=soon").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    let (status, body) = env.get("/nowhere/at/all").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("no_route")));
    assert_eq!(body["error"]["message"], "no endpoint at GET /nowhere/at/all");
    let (status, body) = env.get("/projections/%FF%FE").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let response = env.http.patch(env.url("/projections/user-directory")).send().await.expect("patch");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers().get("allow").expect("Allow").to_str().expect("ascii").to_owned();
    assert!(allow.contains("PUT") && allow.contains("DELETE"), "{allow}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert_eq!(
        body["error"]["message"],
        "PATCH is not allowed on /projections/user-directory; the Allow header lists what is"
    );

    let (_, all) = env.get("/projections").await;
    assert_eq!(all.as_array().expect("list").len(), 1, "refused deploys add nothing");
}

on_both_backends!(a_bad_event_faults_its_projection_while_another_keeps_going);
async fn a_bad_event_faults_its_projection_while_another_keeps_going(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    env.deploy("inventory", env!("WASM_INVENTORY")).await;
    let broken = EventData::binary("UserRegistered", b"{not json".to_vec().into());
    let bad = env.events.append_to_stream("user-bad", &Default::default(), broken).await.expect("append");
    let stock =
        EventData::json("StockReceived", &json!({"sku": "apple", "warehouse": "north", "quantity": 5})).expect("event");
    let ok = env.events.append_to_stream("stock-apple", &Default::default(), stock).await.expect("append");

    let (status, doc) =
        env.get(&format!("/projections/inventory/collections/skus/apple?at_least={}", ok.position.commit)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["quantity"], 5);

    let (status, body) =
        env.get(&format!("/projections/user-directory/collections/users/x?at_least={}", bad.position.commit)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, projection) = env.get("/projections/user-directory").await;
    assert_eq!(projection["state"], "faulted");
    assert_eq!(projection["fault"]["stream"], "user-bad");
    assert_eq!(projection["fault"]["position"], bad.position.commit);
    assert_eq!(projection["fault"]["event_type"], "UserRegistered");
    let reason = projection["fault"]["reason"].as_str().expect("reason");
    assert!(reason.starts_with("invalid event: "), "the guest's own message: {projection}");
    assert!(!reason.contains("batch"), "no internal batch index: {projection}");
}

on_both_backends!(a_restarted_host_resumes_from_the_checkpoint_without_counting_twice);
async fn a_restarted_host_resumes_from_the_checkpoint_without_counting_twice(backend: Backend) {
    let mut env = HostEnv::start_on(backend).await;
    env.deploy("signup-stats", env!("WASM_SIGNUP_STATS")).await;
    for n in 0..30 {
        register(&env, n, &format!("user{n}@example.com")).await;
    }
    let last = register(&env, 30, "last@example.com").await;
    let (status, _) =
        env.get(&format!("/projections/signup-stats/collections/domains/example.com?at_least={last}")).await;
    assert_eq!(status, StatusCode::OK);

    env.restart_host().await;
    let (status, body) = env.get("/projections/signup-stats").await;
    assert_eq!(status, StatusCode::OK, "the projection is back after the restart: {body}");
    assert_eq!(body["events_processed"], 31, "resumes from the stored checkpoint: {body}");
    let (status, body) = env.deploy("signup-stats", env!("WASM_SIGNUP_STATS")).await;
    assert_eq!(status, StatusCode::OK, "deploying the same bytes again changes nothing: {body}");
    assert_eq!(body["events_processed"], 31, "{body}");
    let last = register(&env, 31, "more@example.com").await;
    let (status, doc) =
        env.get(&format!("/projections/signup-stats/collections/domains/example.com?at_least={last}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, json!({"domain": "example.com", "count": 32}), "every sign-up counted exactly once");
    let (_, day) = env.get("/projections/signup-stats/collections/days/2026-11-23").await;
    assert_eq!(day["count"], 32);
}

on_both_backends!(declared_indexes_are_built_once_the_projection_has_caught_up);
async fn declared_indexes_are_built_once_the_projection_has_caught_up(backend: Backend) {
    let env = HostEnv::start_on(backend.clone()).await;
    for n in 0..50 {
        register(&env, n, &format!("user{n}@example.com")).await;
    }
    let (status, body) = env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let projection = env.host().deployments().get("user-directory").expect("deployed");
    projection.wait_until_running().await.expect("catches up");
    let indexes = projection.db().indexes().expect("indexes");
    assert_eq!(indexes.len(), 2, "users.email and users.username: {indexes:?}");
    for field in ["email", "username"] {
        let path = match backend {
            Backend::Sqlite => format!("'$.\"{field}\"'"),
            Backend::Postgres(_) => format!("'{{{field}}}'"),
        };
        assert!(indexes.iter().any(|sql| sql.contains(&path)), "{field}: {indexes:?}");
    }
    let (status, page) = env.get("/projections/user-directory/collections/users?filter=email=user7@example.com").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["key"], "u7");
}

on_both_backends!(listings_filter_order_and_count_on_document_fields);
async fn listings_filter_order_and_count_on_document_fields(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    env.deploy("inventory", env!("WASM_INVENTORY")).await;
    let mut last = 0;
    for (sku, warehouse, quantity) in
        [("apple", "north", 5), ("apple", "south", 50), ("pear", "north", 20), ("fig", "east", 1)]
    {
        let event =
            EventData::json("StockReceived", &json!({"sku": sku, "warehouse": warehouse, "quantity": quantity}))
                .expect("event");
        last = env
            .events
            .append_to_stream(format!("stock-{sku}"), &Default::default(), event)
            .await
            .expect("append")
            .position
            .commit;
    }
    let keys = |page: &Value| -> Vec<String> {
        page["items"].as_array().expect("items").iter().map(|i| i["key"].as_str().expect("key").to_owned()).collect()
    };
    let base = "/projections/inventory/collections/stock";
    let (status, page) = env.get(&format!("{base}?at_least={last}&filter=quantity>=5&filter=warehouse=north")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(keys(&page), ["apple@north", "pear@north"]);
    let (_, page) = env.get(&format!("{base}?order_by=-quantity&limit=2")).await;
    assert_eq!(keys(&page), ["apple@south", "pear@north"]);
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let (_, page) = env.get(&format!("{base}?order_by=-quantity&limit=2&cursor={cursor}")).await;
    assert_eq!(keys(&page), ["apple@north", "fig@east"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, count) = env.get(&format!("{base}?count=true&filter=sku!=apple")).await;
    assert_eq!(count, json!({"count": 2}));
    let (_, count) = env.get(&format!("{base}?count=true&filter=sku=%22apple%22")).await;
    assert_eq!(count, json!({"count": 2}), "a quoted value is a string");

    for (query, code) in [
        ("filter=quantity", "invalid_filter"),
        ("filter=a..b=1", "invalid_filter"),
        ("order_by=x'y", "invalid_field"),
        ("sort=quantity", "unknown_parameter"),
        ("limit=5000", "invalid_limit"),
    ] {
        let (status, body) = env.get(&format!("{base}?{query}")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{query}: {body}");
    }
    // A key cursor cannot continue an ordered listing.
    let (_, page) = env.get(&format!("{base}?limit=1")).await;
    let key_cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let (status, _) = env.get(&format!("{base}?order_by=quantity&cursor={key_cursor}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

on_both_backends!(at_least_a_position_the_projection_filters_out_answers_promptly);
async fn at_least_a_position_the_projection_filters_out_answers_promptly(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    env.deploy("inventory", env!("WASM_INVENTORY")).await;
    // inventory only follows `stock-` streams; this event is not for it.
    let elsewhere = register(&env, 1, "a@example.com").await;
    // Reached through the server's checkpoint (a 504 would mean it never was).
    let (status, body) = env.get(&format!("/projections/inventory/collections/skus/none?at_least={elsewhere}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    let (_, status) = env.get("/projections/inventory").await;
    assert!(status["checkpoint"].as_u64().expect("checkpoint") >= elsewhere, "{status}");
    assert_eq!(status["events_processed"], 0);
}

async fn metrics(env: &HostEnv) -> String {
    let response = env.http.get(env.url("/metrics")).send().await.expect("get /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("text")
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

on_both_backends!(status_and_metrics_report_progress_lag_and_faults);
async fn status_and_metrics_report_progress_lag_and_faults(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    let boom = projector_tests::json_event("Boom", json!({}));
    let boom = env.events.append_to_stream("misc-1", &Default::default(), boom).await.expect("append").position.commit;
    env.deploy("signup-stats", env!("WASM_SIGNUP_STATS")).await;
    env.deploy("panicking", env!("WASM_GUEST_PANICKING")).await;
    let mut last = 0;
    for n in 0..5 {
        last = register(&env, n, &format!("user{n}@example.com")).await;
    }
    let (status, _) =
        env.get(&format!("/projections/signup-stats/collections/domains/example.com?at_least={last}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = env.get(&format!("/projections/panicking/collections/seen/x?at_least={boom}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a faulted projection never reaches a position");
    let head = env.host().deployments().head().clone();
    projector_tests::within("the head tracker", head.reached(last)).await;

    let (_, stats) = env.get("/projections/signup-stats").await;
    assert_eq!(stats["state"], "running");
    assert_eq!(stats["lag_events"], 0, "{stats}");
    assert_eq!(stats["lag_seconds"], 0.0, "{stats}");
    // The faulted projection applied nothing: all six events are ahead of it.
    let (_, panicking) = env.get("/projections/panicking").await;
    assert_eq!(panicking["state"], "faulted");
    assert_eq!(panicking["checkpoint"], Value::Null);
    assert_eq!(panicking["lag_events"], 6, "{panicking}");
    assert!(panicking["lag_seconds"].as_f64().expect("lag_seconds") >= 0.0);

    let text = metrics(&env).await;
    let stats_events = r#"{projection="signup-stats",event_type="UserRegistered"}"#;
    assert_eq!(sample(&text, &format!("projector_events_processed_total{stats_events}")), Some(5.0), "{text}");
    assert_eq!(sample(&text, &format!("projection_event_processing_seconds_count{stats_events}")), Some(5.0));
    assert_eq!(sample(&text, r#"projector_projection_faults_total{projection="panicking"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"projector_projection_faults_total{projection="signup-stats"}"#), None);
    assert_eq!(sample(&text, r#"projector_lag_events{projection="panicking"}"#), Some(6.0));
    assert_eq!(sample(&text, r#"projector_lag_events{projection="signup-stats"}"#), Some(0.0));
    assert_eq!(sample(&text, r#"projector_checkpoint_position{projection="signup-stats"}"#), Some(last as f64));
    assert_eq!(sample(&text, r#"projector_projection_state{projection="panicking",state="faulted"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"projector_projection_state{projection="panicking",state="running"}"#), Some(0.0));
    assert_eq!(sample(&text, r#"projector_query_seconds_count{projection="signup-stats",kind="document"}"#), Some(1.0));
    let commits = sample(&text, r#"projector_batch_commit_seconds_count{projection="signup-stats"}"#);
    assert!(commits.is_some_and(|n| n >= 1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_follow_a_restarted_event_store_without_losing_or_repeating_events() {
    let mut env = HostEnv::start().await;
    env.deploy("signup-stats", env!("WASM_SIGNUP_STATS")).await;
    let mut last = 0;
    for n in 0..10 {
        last = register(&env, n, &format!("user{n}@example.com")).await;
    }
    let (status, _) =
        env.get(&format!("/projections/signup-stats/collections/domains/example.com?at_least={last}")).await;
    assert_eq!(status, StatusCode::OK);

    // The store goes away under the running host: the status says so while
    // it lasts. Then it comes back on the same address.
    let addr = env.store.server().local_addr();
    env.store.stop().await;
    let held = env.wait_status("signup-stats", "the status to show the outage", |s| s.state == State::Retrying).await;
    assert_eq!(held["state"], "retrying", "{held}");
    assert!(held["problem"].as_str().is_some_and(|p| !p.is_empty()), "{held}");
    assert_eq!(held["events_processed"], 10);
    env.store.start_at(addr).await;
    for n in 10..20 {
        last = projector_tests::within("an append after the restart", register(&env, n, &format!("u{n}@example.com")))
            .await;
    }
    let (status, doc) = projector_tests::within(
        "the projection to catch up",
        env.get(&format!("/projections/signup-stats/collections/domains/example.com?at_least={last}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc, json!({"domain": "example.com", "count": 20}), "each event applied exactly once");
    let (_, stats) = env.get("/projections/signup-stats").await;
    assert_eq!(stats["events_processed"], 20);
    assert!(stats["problem"].is_null(), "{stats}");
}

/// Event types are exact for a current module and prefixes for one built
/// against 0.1.0, through the server-side filter and the host's own check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_event_types_and_legacy_prefixes_each_deliver_what_they_say() {
    let env = HostEnv::start().await;
    for (name, module) in [("shipments", env!("WASM_GUEST_SHIPMENTS")), ("legacy", env!("WASM_GUEST_LEGACY"))] {
        let (status, body) = env.deploy(name, module).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }
    let events: Vec<EventData> = ["OrderPlaced", "OrderShipped", "OrderShippedNotificationSent", "OrderShip"]
        .into_iter()
        .map(|event_type| EventData::json(event_type, &json!({})).expect("json"))
        .collect();
    let appended = env.events.append_to_stream("order-1", &Default::default(), events).await.expect("append");
    let last = appended.position.commit;

    for (name, expected) in
        [("shipments", vec!["OrderShipped"]), ("legacy", vec!["OrderShipped", "OrderShippedNotificationSent"])]
    {
        let (status, page) =
            env.api().get_caught_up(&format!("/projections/{name}/collections/seen?at_least={last}")).await;
        assert_eq!(status, StatusCode::OK, "{name}: {page}");
        let mut seen: Vec<&str> =
            page["items"].as_array().expect("items").iter().map(|i| i["doc"]["type"].as_str().expect("type")).collect();
        seen.sort_unstable();
        assert_eq!(seen, expected, "{name}");
    }
}
