//! A projection crate of one's own, outside this repository, as a new user
//! makes one: `projector new`, then the commands its README gives, then a
//! deploy of the module it built to a running host.
//!
//! The crate is built with its own cargo invocations (natively for its
//! tests, for `wasm32-unknown-unknown` with `--release` for the module) in
//! `target/own-crate/`, kept between runs so a second run builds little.

use std::path::{Path, PathBuf};
use std::process::Command;

use eventstore::EventData;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{HostEnv, BINARY};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs `command` to completion off the async threads; panics with its output if it fails.
async fn run(mut command: Command, what: &str) -> String {
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("thread").expect(what);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(
        output.status.success(),
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// `cargo <args>` in `dir`, with none of this build's settings leaking in.
fn cargo(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", workspace().join("target/own-crate"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crate_made_by_projector_new_tests_builds_and_deploys_outside_the_repository() {
    let outside = tempfile::tempdir().expect("temp dir");
    let mut new = Command::new(BINARY);
    new.current_dir(outside.path()).args(["new", "orders"]);
    let said = run(new, "projector new orders").await;
    assert!(said.contains("cargo build --release --target wasm32-unknown-unknown"), "{said}");
    let crate_dir = outside.path().join("orders");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("Cargo.toml");
    let sdk = workspace().join("guest-sdk").canonicalize().expect("sdk");
    assert!(manifest.contains(&format!("path = \"{}\"", sdk.display())), "the SDK by path:\n{manifest}");

    // The same dependency versions as this workspace, so the test does not
    // depend on what was released today.
    std::fs::copy(workspace().join("Cargo.lock"), crate_dir.join("Cargo.lock")).expect("lock file");
    let tests = run(cargo(&crate_dir, &["test"]), "cargo test in the new crate").await;
    assert!(tests.contains("test result: ok. 2 passed"), "{tests}");
    run(cargo(&crate_dir, &["build", "--release", "--target", "wasm32-unknown-unknown"]), "the module's build").await;
    let module = workspace().join("target/own-crate/wasm32-unknown-unknown/release/orders.wasm");

    let env = HostEnv::start().await;
    let (status, body) = env.deploy("orders", module.to_str().expect("utf-8 path")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], "0.1.0", "{body}");
    let events: Vec<EventData> = [("apple", 2), ("apple", 3), ("pear", 1)]
        .into_iter()
        .map(|(item, quantity)| {
            EventData::json("ItemAdded", &json!({"itemId": item, "quantity": quantity})).expect("json")
        })
        .collect();
    let appended = env.events.append_to_stream("basket-1", &Default::default(), events).await.expect("append");
    let path = format!("/projections/orders/collections/items/apple?at_least={}", appended.position.commit);
    let (status, apple) = env.api().get_caught_up(&path).await;
    assert_eq!((status, apple), (StatusCode::OK, json!({"quantity": 5})));
}
