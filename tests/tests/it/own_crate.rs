//! A projection project of one's own, outside this repository, as a new
//! user makes one: `projector new` (Rust, TypeScript, Python), then the
//! commands its README gives, then a deploy of the module it built to a
//! running host.
//!
//! The Rust crate is built with its own cargo invocations (natively for its
//! tests, for `wasm32-unknown-unknown` with `--release` for the module) in
//! `target/own-crate/`, kept between runs so a second run builds little. The
//! TypeScript and Python projects install their pinned tools from npm and
//! PyPI (opt-in with `PROJECTOR_GUEST_LANGUAGES=1`, as `languages` is).

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

    deploys_and_sums_items(&module, "0.1.0").await;
}

/// Deploys `module` as `orders` to a new host, appends `ItemAdded` events and
/// checks the sums the scaffolded projection keeps.
async fn deploys_and_sums_items(module: &Path, version: &str) {
    let env = HostEnv::start().await;
    let (status, body) = env.deploy("orders", module.to_str().expect("utf-8 path")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], version, "{body}");
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

/// `projector new orders --lang LANG` in a new temporary directory; the project's path.
async fn scaffold(outside: &Path, lang: &str) -> PathBuf {
    let mut new = Command::new(BINARY);
    new.current_dir(outside).args(["new", "orders", "--lang", lang]);
    let said = run(new, &format!("projector new orders --lang {lang}")).await;
    assert!(said.contains("projector deploy orders"), "{said}");
    outside.join("orders")
}

fn languages_enabled() -> bool {
    let enabled = std::env::var_os("PROJECTOR_GUEST_LANGUAGES").is_some();
    if !enabled {
        eprintln!("skipping: set PROJECTOR_GUEST_LANGUAGES=1 (cargo xtask test does; it needs Node.js and Python)");
    }
    enabled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_project_made_by_projector_new_tests_builds_and_deploys() {
    if !languages_enabled() {
        return;
    }
    let outside = tempfile::tempdir().expect("temp dir");
    let project = scaffold(outside.path(), "ts").await;
    let npm = |args: &[&str]| {
        let mut command = Command::new("npm");
        command.current_dir(&project).args(args);
        command
    };
    run(npm(&["install", "--no-audit", "--no-fund", "--loglevel=error"]), "npm install").await;
    let tests = run(npm(&["test"]), "npm test").await;
    assert!(tests.contains("# pass 2") && tests.contains("# fail 0"), "{tests}");
    run(npm(&["run", "typecheck"]), "npm run typecheck").await;
    let built = run(npm(&["run", "test:built"]), "npm run test:built").await;
    assert!(built.contains("# pass 1") && built.contains("# fail 0"), "{built}");
    deploys_and_sums_items(&project.join("dist/orders.wasm"), "0.1.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_project_made_by_projector_new_tests_builds_and_deploys() {
    if !languages_enabled() {
        return;
    }
    let outside = tempfile::tempdir().expect("temp dir");
    let project = scaffold(outside.path(), "python").await;
    let mut venv = Command::new("python3");
    venv.current_dir(&project).args(["-m", "venv", ".venv"]);
    run(venv, "python3 -m venv").await;
    let python = |args: &[&str]| {
        let mut command = Command::new(project.join(".venv/bin/python"));
        command.current_dir(&project).args(args);
        command
    };
    run(
        python(&["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"]),
        "pip install",
    )
    .await;
    let tests = run(python(&["-m", "pytest", "-q", "-p", "no:cacheprovider"]), "pytest").await;
    assert!(tests.contains("2 passed"), "{tests}");
    run(python(&["-m", "projector_guest.build", "projection:Orders", "-o", "dist/orders.wasm"]), "the build").await;
    deploys_and_sums_items(&project.join("dist/orders.wasm"), "0.1.0").await;
}
