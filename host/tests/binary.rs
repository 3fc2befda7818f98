//! The `projector` binary as users run it: `projector eventstore` serves the
//! official client (over TLS, with the generated admin password: the default)
//! and stops cleanly on SIGTERM, keeping what it acknowledged.
//! (Everything else is tested in-process in the `tests/` crate.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use eventstore::{EventData, ReadStreamOptions};

/// Starts `projector eventstore` on a free port and returns it with its address.
fn start(data: &std::path::Path) -> (Child, String, BufReader<std::process::ChildStderr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["eventstore", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("projector starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("read log") > 0, "projector exited before listening");
        if let Some(rest) = line.split("event store listening addr=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    (child, addr, stderr)
}

/// A client with the credentials and CA the store generated into `data`.
fn secure_client(data: &std::path::Path, addr: &str) -> eventstore::Client {
    let password = std::fs::read_to_string(data.join("admin-password")).expect("generated password");
    let ca = data.join("tls/ca.crt");
    let connection = format!("esdb://admin:{}@{addr}?tls=true&tlsCAFile={}", password.trim(), ca.display());
    eventstore::Client::new(connection.parse().expect("settings")).expect("client")
}

fn terminate(mut child: Child, mut stderr: BufReader<std::process::ChildStderr>) -> String {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).expect("read log") > 0 {
        rest.push_str(&line);
        line.clear();
    }
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "clean exit on SIGTERM, got {exit}; log:\n{rest}");
    rest
}

#[tokio::test]
async fn projector_eventstore_serves_the_client_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, addr, stderr) = start(dir.path());
    let client = secure_client(dir.path(), &addr);
    let event = EventData::json("Started", &serde_json::json!({"ok": true})).expect("event");
    client.append_to_stream("binary", &Default::default(), event).await.expect("append");
    // The client stays connected: an idle connection must not hold up the shutdown.
    let log = terminate(child, stderr);
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("event store stopped"), "{log}");

    // Restarted on the same data, the acknowledged event is there.
    let (child, addr, stderr) = start(dir.path());
    let client = secure_client(dir.path(), &addr);
    let mut read = client.read_stream("binary", &ReadStreamOptions::default()).await.expect("read");
    let event = read.next().await.expect("read").expect("one event");
    assert_eq!(event.get_original_event().event_type, "Started");
    terminate(child, stderr);
}
