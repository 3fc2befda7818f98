//! `POST /try` and the console's files: a module run over events in the
//! sandbox answers what it would write and log, and commits nothing.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{register, HostEnv};

/// `POST /try` with `body`, with the admin token when `admin`.
async fn try_with(env: &HostEnv, body: &Value, admin: bool) -> (StatusCode, Value) {
    let mut request = env.http.post(env.url("/try")).json(body);
    if admin {
        request = request.bearer_auth(env.token());
    }
    let response = request.send().await.expect("post /try");
    (response.status(), response.json().await.expect("json body"))
}

fn module_base64(path: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("module"))
}

fn registration(n: u32, email: &str) -> Value {
    json!({"stream": format!("user-u{n}"), "type": "UserRegistered",
           "data": {"userId": format!("u{n}"), "email": email, "username": format!("user{n}"),
                    "passwordHash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", "registeredAt": "2026-11-23T09:00:00Z"},
           "metadata": {"schemaVersion": 2}})
}

#[tokio::test]
async fn a_trial_shows_what_a_module_would_write_over_given_and_recent_events_and_commits_nothing() {
    let env = HostEnv::start().await;
    register(&env, 1, "ada@example.com").await;
    let last = register(&env, 2, "bob@example.com").await;
    let (status, body) = env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) =
        env.api().get_caught_up(&format!("/projections/user-directory/collections/users/u2?at_least={last}")).await;
    assert_eq!(status, StatusCode::OK);

    // Given events, against the deployed read model: a new user and a taken email.
    let events = json!([registration(9, "cy@example.org"), registration(10, "ADA@example.com")]);
    let (status, outcome) = try_with(&env, &json!({"projection": "user-directory", "events": events}), true).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["events"], 2);
    assert_eq!(outcome["error"], Value::Null);
    let writes: Vec<(String, String)> = outcome["writes"]
        .as_array()
        .expect("writes")
        .iter()
        .map(|w| (w["collection"].as_str().unwrap().to_owned(), w["key"].as_str().unwrap().to_owned()))
        .collect();
    assert!(writes.contains(&("users".into(), "u9".into())), "{writes:?}");
    assert!(writes.contains(&("emails".into(), "cy@example.org".into())), "{writes:?}");
    let u9 = outcome["writes"].as_array().unwrap().iter().find(|w| w["key"] == "u9").unwrap();
    assert_eq!(u9["document"]["email"], "cy@example.org", "the document itself, as JSON");
    // Nothing was committed: the read model and the event store are as before.
    let (status, _) = env.get("/projections/user-directory/collections/users/u9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, status_after) = env.get("/projections/user-directory").await;
    assert_eq!(status_after["events_processed"], 2, "{status_after}");

    // The last events of $all, with the uploaded module, over an empty read model.
    let body = json!({"module_base64": module_base64(env!("WASM_USER_DIRECTORY")), "last": 1, "view": "empty"});
    let (status, outcome) = try_with(&env, &body, true).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["events"], 1, "only the last event: {outcome}");
    assert!(outcome["writes"].as_array().unwrap().iter().any(|w| w["key"] == "u2"), "{outcome}");
    assert!(!outcome["writes"].as_array().unwrap().iter().any(|w| w["key"] == "u1"), "{outcome}");
}

#[tokio::test]
async fn a_trial_shows_the_modules_log_lines_and_its_failure() {
    let env = HostEnv::start().await;
    let body = json!({
        "module_base64": module_base64(env!("WASM_GUEST_PANICKING")),
        "events": [{"stream": "s-1", "type": "Fine", "data": {}}, {"stream": "s-2", "type": "Boom"}],
    });
    let (status, outcome) = try_with(&env, &body, true).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    let error = outcome["error"].as_str().expect("the module's failure");
    // A Rust panic aborts in Wasm: the trap's backtrace names the module's function.
    assert!(
        error.starts_with("the module trapped") && error.contains("Panicking") && error.contains("apply"),
        "{error}"
    );
    assert_eq!(outcome["writes"], json!([]), "a failed batch writes nothing");
    assert_eq!(outcome["logs"], json!([{"level": "warn", "message": "about to fail on s-2"}]));
}

#[tokio::test]
async fn a_trial_request_that_cannot_be_met_is_refused_with_its_reason() {
    let env = HostEnv::start().await;
    let module = module_base64(env!("WASM_USER_DIRECTORY"));
    let refused = [
        (json!({"module_base64": module}), false, StatusCode::UNAUTHORIZED, "unauthorized"),
        (json!({"module_base64": "not base64!"}), true, StatusCode::BAD_REQUEST, "invalid_request"),
        (json!({"module_base64": "AAAA"}), true, StatusCode::UNPROCESSABLE_ENTITY, "not_wasm"),
        (json!({"projection": "nobody"}), true, StatusCode::NOT_FOUND, "unknown_projection"),
        (json!({}), true, StatusCode::BAD_REQUEST, "invalid_request"),
        (json!({"module_base64": module, "view": "current"}), true, StatusCode::BAD_REQUEST, "invalid_request"),
        (json!({"module_base64": module, "last": 1, "events": []}), true, StatusCode::BAD_REQUEST, "invalid_request"),
        (json!({"module_base64": module, "last": 10_001}), true, StatusCode::BAD_REQUEST, "invalid_request"),
        (
            json!({"module_base64": module, "events": [{"stream": "", "type": "T"}]}),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (json!({"module_base64": module, "surprise": 1}), true, StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (body, admin, status, code) in refused {
        let (got, answer) = try_with(&env, &body, admin).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    let (_, list) = env.get("/projections").await;
    assert_eq!(list, json!([]), "nothing was deployed");
}

#[tokio::test]
async fn the_console_is_served_at_the_root_without_a_token_under_a_strict_policy() {
    let env = HostEnv::start().await;
    for (path, kind, marker) in [
        ("/", "text/html", "/console/console.js"),
        ("/console/console.js", "text/javascript", "function"),
        ("/console/console.css", "text/css", "{"),
    ] {
        let response = env.http.get(env.url(path)).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(headers[reqwest::header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}: {headers:?}");
        let policy = headers[reqwest::header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("default-src 'self'"), "{policy}");
        assert!(response.text().await.unwrap().contains(marker), "{path}");
    }
}
