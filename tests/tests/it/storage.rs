//! The host's storage failing under it: a data directory it cannot use, and
//! a disk that fills up while a projection writes its read model (the host
//! process gets a file size limit, which makes writes fail like a full disk).

use std::path::Path;
use std::time::Duration;

use eventstore::{AppendToStreamOptions, EventData};
use projector_tests::{within, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::process::{HostProcess, TOKEN};

const TALLY: &str = env!("WASM_GUEST_TALLY");

async fn append(events: &eventstore::Client, from: u64, count: u64) -> u64 {
    let batch: Vec<EventData> =
        (from..from + count).map(|n| EventData::json("Tallied", &json!({ "n": n })).expect("event")).collect();
    let options = AppendToStreamOptions::default();
    events.append_to_stream(format!("tally-{from}"), &options, batch).await.expect("append").position.commit
}

async fn get(http: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let response = http.get(url).send().await.expect("request");
    (response.status(), response.json().await.expect("json"))
}

/// Polls the projection's status until `done` says so.
async fn status_until(http: &reqwest::Client, host: &HostProcess, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    within(what, async {
        loop {
            poll.tick().await;
            let (_, status) = get(http, format!("{}/projections/tally", host.url)).await;
            if done(&status) {
                break status;
            }
        }
    })
    .await
}

/// The largest read-model file (database or write-ahead log) under `data`.
fn largest_readmodel_file(data: &Path) -> u64 {
    let mut largest = 0;
    let mut dirs = vec![data.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry")) {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if entry.file_name().to_string_lossy().contains(".sqlite") {
                largest = largest.max(meta.len());
            }
        }
    }
    largest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_a_projection_up_without_damage_and_it_resumes_when_space_returns() {
    let store = TestEnv::start().await;
    let events = store.client();
    let eventstore = store.server().connection_string();
    let data = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let host = HostProcess::spawn(data.path(), &eventstore).await;
    let deployed = http
        .put(format!("{}/projections/tally", host.url))
        .bearer_auth(TOKEN)
        .body(std::fs::read(TALLY).expect("module"))
        .send()
        .await
        .expect("deploy");
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let first = append(&events, 0, 100).await;
    let total = format!("{}/projections/tally/collections/totals/all", host.url);
    assert_eq!(get(&http, format!("{total}?at_least={first}")).await.1["count"], 100);

    // The disk fills up: read-model files may grow by 32 KiB more, and the
    // next events need far more than that.
    host.process().limit_file_size(Some(largest_readmodel_file(data.path()) + 32 * 1024));
    let mut last = 0;
    for block in 0..10 {
        last = append(&events, 100 + block * 500, 500).await;
    }
    let held = status_until(&http, &host, "the projection to report the full disk", |s| s["state"] == "retrying").await;
    let problem = held["problem"].as_str().expect("a problem while retrying").to_owned();
    eprintln!("held up by: {problem}");
    assert!(problem.contains("cannot write the read model"), "{problem}");
    assert!(held["fault"].is_null(), "a full disk is not the module's fault: {held}");
    // What is there stays consistent and is still served: one document per
    // event counted, as many as the status reports applied.
    let (status, counted) = get(&http, total.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, documents) = get(&http, format!("{}/projections/tally/collections/events?count=true", host.url)).await;
    let (_, now) = get(&http, format!("{}/projections/tally", host.url)).await;
    assert_eq!(counted["count"], documents["count"]);
    assert!(counted["count"].as_u64().expect("count") < 5100);
    assert_eq!(now["events_processed"], counted["count"]);

    // Space returns: the projection goes on by itself, every event once.
    host.process().limit_file_size(None);
    let caught_up = within("the projection to catch up once there is room", async {
        loop {
            let (status, body) = get(&http, format!("{total}?at_least={last}")).await;
            if status != StatusCode::GATEWAY_TIMEOUT {
                break (status, body);
            }
        }
    })
    .await;
    assert_eq!(caught_up, (StatusCode::OK, json!({"count": 5100, "version": "1.0.0"})));
    let (_, documents) = get(&http, format!("{}/projections/tally/collections/events?count=true", host.url)).await;
    assert_eq!(documents["count"], 5100);
    let after = status_until(&http, &host, "the state to clear", |s| s["state"] == "running").await;
    assert!(after["problem"].is_null() && after["fault"].is_null(), "{after}");
    assert!(
        host.log()
            .iter()
            .any(|line| line.contains("held up; retrying") && line.contains("cannot write the read model")),
        "the host logged why it was held up"
    );
}

#[test]
fn a_data_directory_that_cannot_be_used_stops_the_host_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("data");
    std::fs::write(&not_a_dir, b"a file where the data directory should be").expect("file");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_projector-host"))
        .args(["serve", "--listen", "127.0.0.1:0", "--eventstore", "esdb://127.0.0.1:1?tls=false"])
        .arg("--data")
        .arg(&not_a_dir)
        .env("PROJECTOR_ADMIN_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the host");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the host must not start: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains(&*not_a_dir.to_string_lossy()), "{stderr}");
    assert_eq!(std::fs::read(&not_a_dir).expect("file"), b"a file where the data directory should be");
}
