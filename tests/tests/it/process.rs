//! The real `projector` binary as a separate process: the command-line
//! client against it, and a `kill -9` in the middle of its work.
//!
//! The event store runs in the test (so it survives the kill); the host
//! follows it through `--eventstore`. The host's log tells the test where
//! its API listens; nothing here waits by sleeping.

use std::process::{Command, Stdio};

use projector_tests::{within, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::tally::{self, V1, V2};
use crate::support::{Api, HostProcess, BINARY, TOKEN};

/// Runs the command-line client against the host at `api`: (success, stdout, stderr).
async fn cli(api: &Api, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(BINARY);
    command.args(args).args(["--url", &api.url(""), "--token", api.token()]).stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("thread").expect("run the client");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_host_process_that_comes_back_as_it_was_after_kill_9() {
    let store = TestEnv::start().await;
    let events = store.client();
    let eventstore = store.server().connection_string();
    let data = tempfile::tempdir().expect("tempdir");

    let host = HostProcess::spawn(data.path(), &eventstore).await;

    let (ok, out, err) = cli(host.api(), &["deploy", "tally", V1]).await;
    assert!(ok, "{out}{err}");
    let line = |out: &str, key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .map(|l| l.split_once(':').expect("colon").1.trim().to_owned())
    };
    assert_eq!(line(&out, "version").as_deref(), Some("1.0.0"), "{out}");
    assert_eq!(line(&out, "previous").as_deref(), Some("none"), "{out}");
    for name in ["swapped", "stopped"] {
        let (ok, _, err) = cli(host.api(), &["deploy", name, V1, "--on-error", "skip"]).await;
        assert!(ok, "{err}");
    }
    // The deployment name rules; a module that calls itself otherwise is said so in the log.
    // (The log is collected from the process's stderr by a thread: wait, bounded, for the line.)
    let renamed = "the module describes itself as 'tally' but is deployed as 'swapped'";
    within("the warning about the name", async {
        let mut every = tokio::time::interval(std::time::Duration::from_millis(20));
        while !host.log().iter().any(|line| line.contains(renamed)) {
            every.tick().await;
        }
    })
    .await;
    assert!(!host.log().iter().any(|line| line.contains("deployed as 'tally'")), "the same name is no mismatch");
    let position = tally::append(&events, "tally-a", 100).await.1;
    for name in ["tally", "swapped", "stopped"] {
        tally::total(host.api(), name, position).await;
    }

    // Errors: one line, non-zero exit, nothing changed.
    let (ok, _, err) = cli(host.api(), &["deploy", "tally", "/proc/self/status"]).await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: not a WebAssembly module") && err.contains("HTTP 422"), "{err}");
    let (ok, _, err) = cli(host.api(), &["stop", "nope"]).await;
    assert!(!ok && err.contains("no projection named 'nope'") && err.contains("HTTP 404"), "{err}");
    let wrong = "not-the-admin-token-5f2a9c";
    let refused = host.api().http.post(host.api().url("/projections/tally/stop")).bearer_auth(wrong).send().await;
    assert_eq!(refused.expect("post").status(), StatusCode::UNAUTHORIZED);
    let log = host.log();
    assert!(log.len() > 3, "the host logged: {log:?}");
    for token in [TOKEN, wrong] {
        assert!(!log.iter().any(|line| line.contains(token)), "a token is in the host's log: {log:?}");
    }

    let (ok, out, err) = cli(host.api(), &["deploy", "swapped", V2, "--mode", "continue"]).await;
    assert!(ok && out.contains("2.0.0"), "{out}{err}");
    let (ok, _, err) = cli(host.api(), &["stop", "stopped"]).await;
    assert!(ok, "{err}");
    // A rebuild: the client follows it until queries switch.
    let (ok, out, err) = cli(host.api(), &["deploy", "tally", V2, "--mode", "rebuild"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("tally: queries switched to version 2.0.0"), "{out}");
    let (ok, out, _) = cli(host.api(), &["query", "tally", "totals", "all"]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json"), json!({ "count": 100, "version": "2.0.0" }));
    // The README's form, `--order-by -field`, is a value, not a flag.
    let (ok, out, err) =
        cli(host.api(), &["query", "tally", "events", "--order-by", "-position", "--limit", "2"]).await;
    assert!(ok, "{err}");
    let page: Value = serde_json::from_str(&out).expect("json");
    let positions: Vec<u64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["doc"]["position"].as_u64().expect("position"))
        .collect();
    assert!(positions.len() == 2 && positions[0] > positions[1], "descending: {out}");
    // A trial: what the module would write over the last events, nothing committed.
    let (ok, out, err) = cli(host.api(), &["try", "tally", V2, "--last", "5"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("5 events") && out.contains("(nothing committed)") && out.contains("totals/all: "), "{out}");
    let (ok, out, err) = cli(host.api(), &["try", "not-deployed-yet", V1, "--last", "3"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("nothing is deployed as not-deployed-yet") && out.contains("3 events"), "{out}");
    let (ok, out, _) = cli(host.api(), &["query", "tally", "totals", "all"]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json"), json!({ "count": 100, "version": "2.0.0" }));

    let position = tally::append(&events, "tally-b", 50).await.1;
    tally::total(host.api(), "tally", position).await;
    let (_, before) = host.api().get("/projections").await;
    let appending = {
        let events = events.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..20 {
                last = tally::append(&events, "tally-c", 10).await.1;
            }
            last
        })
    };
    host.kill();
    let last = appending.await.expect("appends while the host is down");

    let host = HostProcess::spawn(data.path(), &eventstore).await;
    let (_, after) = host.api().get("/projections").await;
    let shape = |list: &Value| -> Vec<Value> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|s| json!([s["name"], s["version"], s["on_error"], s["previous"], s["state"] == "stopped"]))
            .collect()
    };
    assert_eq!(shape(&after), shape(&before), "\n{before}\n{after}");
    assert_eq!(tally::total(host.api(), "tally", last).await, json!({ "count": 350, "version": "2.0.0" }));
    assert_eq!(tally::total(host.api(), "swapped", last).await, json!({ "count": 350, "version": "2.0.0" }));
    let (ok, out, _) = cli(host.api(), &["list"]).await;
    assert!(ok);
    let stopped = out.lines().find(|l| l.starts_with("stopped")).expect("stopped in the list");
    assert!(stopped.contains("stopped") && stopped.contains(" 100 "), "{out}");
    // Columns line up: each value starts under its header (numbers end under theirs).
    let header = out.lines().next().expect("a header");
    for row in out.lines().skip(1) {
        for column in ["VERSION", "STATE"] {
            let at = header.find(column).expect("column");
            let starts_here = row.as_bytes().get(at).is_some_and(|c| *c != b' ') && row.as_bytes()[at - 1] == b' ';
            assert!(starts_here, "{column} misaligned:\n{out}");
        }
        let end = header.find("EVENTS").expect("EVENTS") + "EVENTS".len();
        assert!(row[..end].ends_with(|c: char| c.is_ascii_digit()), "EVENTS not right-aligned:\n{out}");
    }
    // A status is `key: value` lines; --json gives the API's answer.
    let (ok, out, err) = cli(host.api(), &["status", "stopped"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["state:", "stopped"]), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("limits:") && l.contains("memory 64 MiB") && l.contains("(host defaults)")),
        "{out}"
    );
    let (ok, out, err) = cli(host.api(), &["stop", "swapped", "--json"]).await;
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!((status["name"].as_str(), status["state"].as_str()), (Some("swapped"), Some("stopped")));
    let (ok, out, _) = cli(host.api(), &["list", "--json"]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).expect("--json prints JSON").as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_limits_registrations_per_client_and_keeps_its_registration_secret_owner_only() {
    let store = TestEnv::start().await;
    let eventstore = store.server().connection_string();
    let data = tempfile::tempdir().expect("tempdir");
    let settings = [("PROJECTOR_USERS_RATE_PER_MINUTE", "2"), ("PROJECTOR_ARGON2_MEMORY_KIB", "64")];
    let (path, connection) = (data.path().to_path_buf(), eventstore.clone());
    let host = tokio::task::spawn_blocking(move || HostProcess::start_with_env(&path, &connection, &settings))
        .await
        .expect("host");
    let register = |n: u32| {
        let body =
            json!({"email": format!("p{n}@example.com"), "username": format!("proc{n}"), "password": "long enough"});
        host.api().http.post(host.api().url("/users")).header("Idempotency-Key", format!("k{n}")).json(&body).send()
    };
    for n in 0..2 {
        assert_eq!(register(n).await.expect("post").status(), StatusCode::CREATED);
    }
    let limited = register(2).await.expect("post");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");

    use std::os::unix::fs::PermissionsExt;
    let file = data.path().join("registration-secret");
    assert_eq!(std::fs::metadata(&file).expect("secret").permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read_to_string(&file).expect("secret");
    assert!(!host.log().iter().any(|line| line.contains(secret.trim())), "the secret is in no log line");
    host.kill();
}
