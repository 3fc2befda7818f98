//! The host's storage failing under it: a data directory it cannot use, and
//! a disk that fills up while a projection writes its read model (the host
//! process gets a file size limit, which makes writes fail like a full disk).

use std::path::Path;

use projector_tests::{within, TestEnv};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::tally::{self, V1};
use crate::support::{HostProcess, BINARY, TOKEN};

/// The largest read-model database file under `data`. Not its write-ahead
/// log: the host checkpoints that back to empty, so a limit sized from a large
/// log (many small commits on a busy machine) might never be reached.
fn largest_database_file(data: &Path) -> u64 {
    let mut largest = 0;
    let mut dirs = vec![data.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry")) {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if entry.file_name().to_string_lossy().ends_with(".sqlite") {
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
    let host = HostProcess::spawn(data.path(), &eventstore).await;
    let api = host.api();
    let (status, body) = api.deploy("tally", V1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = tally::append(&events, "tally-0", 100).await.1;
    assert_eq!(tally::total(api, "tally", first).await["count"], 100);

    // The disk fills up: no file may grow past the read-model database's
    // size and 32 KiB, and the next events need far more than that.
    host.process().limit_file_size(Some(largest_database_file(data.path()) + 32 * 1024));
    let mut last = 0;
    for block in 0..10 {
        last = tally::append(&events, &format!("tally-{}", 100 + block * 500), 500).await.1;
    }
    let held = api.poll_status("tally", "the projection to report the full disk", |s| s["state"] == "retrying").await;
    let problem = held["problem"].as_str().expect("a problem while retrying").to_owned();
    eprintln!("held up by: {problem}");
    assert!(problem.contains("cannot write the read model"), "{problem}");
    assert!(held["fault"].is_null(), "a full disk is not the module's fault: {held}");
    // What is there stays consistent and is still served: one document per
    // event counted, as many as the status reports applied. A commit may
    // still fit now and then (the WAL starts over once copied back), so the
    // three are read again until they agree with no commit in between.
    let counted = within("the held-up read model's documents, count and status to agree", async {
        loop {
            let (status, counted) = api.get("/projections/tally/collections/totals/all").await;
            assert_eq!(status, StatusCode::OK);
            let (_, documents) = api.get("/projections/tally/collections/events?count=true").await;
            let (_, now) = api.get("/projections/tally").await;
            let (_, again) = api.get("/projections/tally/collections/totals/all").await;
            // (The status moves a moment after its commit lands.)
            if again == counted && documents["count"] == counted["count"] && now["events_processed"] == counted["count"]
            {
                break counted;
            }
        }
    })
    .await;
    assert!(counted["count"].as_u64().expect("count") < 5100);

    // Space returns: the projection goes on by itself, every event once.
    host.process().limit_file_size(None);
    let caught_up = api.get_caught_up(&format!("/projections/tally/collections/totals/all?at_least={last}")).await;
    assert_eq!(caught_up, (StatusCode::OK, json!({"count": 5100, "version": "1.0.0"})));
    let (_, documents) = api.get("/projections/tally/collections/events?count=true").await;
    assert_eq!(documents["count"], 5100);
    let after = api.poll_status("tally", "the state to clear", |s| s["state"] == "running").await;
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
    let output = std::process::Command::new(BINARY)
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
