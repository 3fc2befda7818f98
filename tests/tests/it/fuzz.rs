//! The HTTP API under schema-driven fuzzing: schemathesis reads the OpenAPI
//! document the host publishes (`docs/openapi.yaml`, served at
//! `/openapi.yaml`), generates valid and invalid requests for every
//! operation (boundary values, wrong types, unicode and control characters,
//! `..` and `/` in names, bad filters and cursors, bodies that are not wasm
//! or not JSON) and checks every answer: no 500, only documented status
//! codes, content types and bodies (`tests/schemathesis.toml`).
//!
//! Two passes: without a token, every mutating request is refused, and
//! afterwards what was deployed is exactly as before; with the admin token,
//! the fuzzer may stop or delete things (those are accepted requests), and
//! the host must stay up and answer.
//!
//! Opt-in with `PROJECTOR_SCHEMATHESIS=<path to st>`, which the README's test
//! command sets after installing schemathesis into `target/schemathesis`.

use std::ffi::OsString;

use projector::users::Argon2Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{register, HostEnv};

/// Generated requests per operation and phase (`PROJECTOR_FUZZ_EXAMPLES`
/// for a longer run; 40 makes about 1,500 requests in all). The seed is
/// fixed so the suite is repeatable; `PROJECTOR_FUZZ_SEED` explores others.
fn examples() -> String {
    std::env::var("PROJECTOR_FUZZ_EXAMPLES").unwrap_or_else(|_| "40".to_owned())
}

/// Runs schemathesis against `env` (with `token` as a bearer token, if any);
/// how many requests it made. Fails the test with its report on any problem.
async fn fuzz(st: &OsString, env: &HostEnv, token: Option<&str>) -> u64 {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut command = tokio::process::Command::new(st);
    command
        .arg("--config-file")
        .arg(format!("{root}/tests/schemathesis.toml"))
        .args(["run", &format!("{root}/docs/openapi.yaml"), "--url", &env.url(""), "--no-color"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", &examples()])
        .args(["--seed", &std::env::var("PROJECTOR_FUZZ_SEED").unwrap_or_else(|_| "20261123".to_owned())]);
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    // Its cache and reports go to a directory of their own.
    let scratch = tempfile::tempdir().expect("tempdir");
    let output = command.current_dir(scratch.path()).output().await.expect("run schemathesis");
    let report = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{report}");
    // "  1234 generated, ..." in the summary.
    let generated = report.lines().find_map(|line| {
        line.trim().strip_suffix(" generated").or_else(|| {
            let (count, rest) = line.trim().split_once(" generated")?;
            rest.starts_with(',').then_some(count)
        })
    });
    let requests = generated.and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("no count in:\n{report}"));
    eprintln!(
        "schemathesis ({}): {requests} generated requests, no problem",
        if token.is_some() { "admin" } else { "no token" }
    );
    requests
}

/// What is deployed, as the API shows it, without the moving parts.
async fn deployed(env: &HostEnv) -> Vec<Value> {
    let (_, all) = env.get("/projections").await;
    let list = all.as_array().expect("list");
    list.iter().map(|p| json!([p["name"], p["version"], p["state"], p["on_error"], p["limits"]])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_documented_answers_and_refused_ones_change_nothing() {
    let Some(st) = std::env::var_os("PROJECTOR_SCHEMATHESIS") else {
        eprintln!("skipping the schemathesis run: set PROJECTOR_SCHEMATHESIS (the README's test command does)");
        return;
    };
    // A near-free hash (the fuzzer registers users with valid bodies too) and
    // a short wait for `at_least` positions the projection will never reach.
    let env = HostEnv::start_adjusted(|config| {
        config.registration.argon2 = Argon2Settings { memory_kib: 64, iterations: 1, parallelism: 1 };
        config.at_least_wait = std::time::Duration::from_millis(100);
    })
    .await;
    let (status, body) = env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for n in 1..=3 {
        register(&env, n, &format!("user{n}@example.com")).await;
    }
    let last = register(&env, 4, "user4@example.com").await;
    let (_, users) = env.get(&format!("/projections/user-directory/collections/users?at_least={last}")).await;
    let before = deployed(&env).await;

    let anonymous = fuzz(&st, &env, None).await;
    assert_eq!(deployed(&env).await, before, "requests without a token changed what is deployed");
    let (_, after) = env.get("/projections/user-directory/collections/users?limit=1000").await;
    for user in users["items"].as_array().expect("items") {
        assert!(after["items"].as_array().expect("items").contains(user), "{user} changed or vanished");
    }

    let admin = fuzz(&st, &env, Some(&env.token())).await;
    let response = env.http.get(env.url("/healthz")).send().await.expect("the host is up");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(anonymous + admin > 500, "{anonymous} + {admin} requests");
}
