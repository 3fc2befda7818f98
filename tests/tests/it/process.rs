//! The real `projector` binary as a separate process: the command-line
//! client against it, and a `kill -9` in the middle of its work.
//!
//! The event store runs in the test (so it survives the kill); the host
//! follows it through `--eventstore`. The host's log tells the test where
//! its API listens; nothing here waits by sleeping.

use std::path::Path;
use std::process::{Command, Stdio};

use eventstore::{AppendToStreamOptions, EventData};
use projector_tests::{within, LoggedProcess, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_projector-host");
const V1: &str = env!("WASM_GUEST_TALLY");
const V2: &str = env!("WASM_GUEST_TALLY_V2");
pub(crate) const TOKEN: &str = "process-test-admin-token";

/// A host process and where its API is.
pub(crate) struct HostProcess {
    process: LoggedProcess,
    pub(crate) url: String,
}

impl HostProcess {
    /// Starts `projector serve` on `data` and waits for its "listening" log line.
    pub(crate) fn start(data: &Path, eventstore: &str) -> HostProcess {
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--eventstore", eventstore])
            .arg("--data")
            .arg(data)
            .env("PROJECTOR_ADMIN_TOKEN", TOKEN)
            .env("PROJECTOR_LOG", "info")
            .env_remove("RUST_LOG");
        let process = LoggedProcess::start(command, "projector API listening");
        let url = format!("http://{}", process.addr);
        HostProcess { process, url }
    }

    /// `start` off the async threads (it blocks until the host logs its address).
    pub(crate) async fn spawn(data: &Path, eventstore: &str) -> HostProcess {
        let (data, eventstore) = (data.to_path_buf(), eventstore.to_owned());
        tokio::task::spawn_blocking(move || HostProcess::start(&data, &eventstore)).await.expect("host")
    }

    /// The lines logged so far.
    pub(crate) fn log(&self) -> Vec<String> {
        self.process.log()
    }

    /// The process behind it.
    pub(crate) fn process(&self) -> &LoggedProcess {
        &self.process
    }

    /// `kill -9`.
    pub(crate) fn kill(self) {
        self.process.kill();
    }
}

/// Runs the command-line client against the host at `url`: (success, stdout, stderr).
async fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(BINARY);
    command.args(args).args(["--url", url, "--token", TOKEN]).stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("thread").expect("run the client");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

async fn append(events: &eventstore::Client, stream: &str, count: u64) -> u64 {
    let batch: Vec<EventData> =
        (0..count).map(|n| EventData::json("Tallied", &json!({ "n": n })).expect("event")).collect();
    events.append_to_stream(stream, &AppendToStreamOptions::default(), batch).await.expect("append").position.commit
}

async fn total(http: &reqwest::Client, url: &str, name: &str, at_least: u64) -> Value {
    let url = format!("{url}/projections/{name}/collections/totals/all?at_least={at_least}");
    let response = within("the total", http.get(url).send()).await.expect("query");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_host_process_that_comes_back_as_it_was_after_kill_9() {
    let store = TestEnv::start().await;
    let events = store.client();
    let eventstore = store.server().connection_string();
    let data = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();

    let host = HostProcess::spawn(data.path(), &eventstore).await;

    let (ok, out, err) = cli(&host.url, &["deploy", "tally", V1]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("tally is running version 1.0.0"), "{out}");
    for name in ["swapped", "stopped"] {
        let (ok, _, err) = cli(&host.url, &["deploy", name, V1, "--on-error", "skip"]).await;
        assert!(ok, "{err}");
    }
    let position = append(&events, "tally-a", 100).await;
    for name in ["tally", "swapped", "stopped"] {
        total(&http, &host.url, name, position).await;
    }

    // Errors: one line, non-zero exit, nothing changed.
    let (ok, _, err) = cli(&host.url, &["deploy", "tally", "/proc/self/status"]).await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: not a WebAssembly module") && err.contains("HTTP 422"), "{err}");
    let (ok, _, err) = cli(&host.url, &["stop", "nope"]).await;
    assert!(!ok && err.contains("no projection named 'nope'") && err.contains("HTTP 404"), "{err}");
    let wrong = "not-the-admin-token-5f2a9c";
    let refused = http.post(format!("{}/projections/tally/stop", host.url)).bearer_auth(wrong).send().await;
    assert_eq!(refused.expect("post").status(), StatusCode::UNAUTHORIZED);
    let log = host.log();
    assert!(log.len() > 3, "the host logged: {log:?}");
    for token in [TOKEN, wrong] {
        assert!(!log.iter().any(|line| line.contains(token)), "a token is in the host's log: {log:?}");
    }

    let (ok, out, err) = cli(&host.url, &["deploy", "swapped", V2, "--mode", "continue"]).await;
    assert!(ok && out.contains("2.0.0"), "{out}{err}");
    let (ok, _, err) = cli(&host.url, &["stop", "stopped"]).await;
    assert!(ok, "{err}");
    // A rebuild: the client follows it until queries switch.
    let (ok, out, err) = cli(&host.url, &["deploy", "tally", V2, "--mode", "rebuild"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("tally: queries switched to version 2.0.0"), "{out}");
    let (ok, out, _) = cli(&host.url, &["query", "tally", "totals", "all"]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json"), json!({ "count": 100, "version": "2.0.0" }));

    let position = append(&events, "tally-b", 50).await;
    total(&http, &host.url, "tally", position).await;
    let before: Value =
        http.get(format!("{}/projections", host.url)).send().await.expect("list").json().await.expect("json");
    let appending = {
        let events = events.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..20 {
                last = append(&events, "tally-c", 10).await;
            }
            last
        })
    };
    host.kill();
    let last = appending.await.expect("appends while the host is down");

    let host = HostProcess::spawn(data.path(), &eventstore).await;
    let after: Value =
        http.get(format!("{}/projections", host.url)).send().await.expect("list").json().await.expect("json");
    let shape = |list: &Value| -> Vec<Value> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|s| json!([s["name"], s["version"], s["on_error"], s["previous_version"], s["state"] == "stopped"]))
            .collect()
    };
    assert_eq!(shape(&after), shape(&before), "\n{before}\n{after}");
    assert_eq!(total(&http, &host.url, "tally", last).await, json!({ "count": 350, "version": "2.0.0" }));
    assert_eq!(total(&http, &host.url, "swapped", last).await, json!({ "count": 350, "version": "2.0.0" }));
    let (ok, out, _) = cli(&host.url, &["list"]).await;
    assert!(ok);
    let stopped = out.lines().find(|l| l.starts_with("stopped")).expect("stopped in the list");
    assert!(stopped.contains("stopped") && stopped.contains(" 100 "), "{out}");
}
