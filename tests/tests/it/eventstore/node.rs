//! The official Node.js client (`@eventstore/db-client`), which sends every
//! append through `BatchAppend` and decodes failures from typed status
//! details. Opt-in with `PROJECTOR_NODE_TESTS=1` because it needs `node` and
//! the package installed by `npm ci` in `tests/node` (the README's test
//! command does both).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use eventstore_embedded::Security;
use projector_tests::{within, TestEnv};

#[tokio::test]
async fn the_node_client_passes_its_conformance_script() {
    let Some(node_dir) = node_dir() else { return };
    let env = TestEnv::start().await;
    run_script(&node_dir, "conformance.mjs", &[env.server().connection_string()]).await;
}

/// The same script over TLS (the generated CA) with the admin password, and
/// again without credentials and with a wrong password: both refused with
/// the Node client's `AccessDeniedError`, the stream unchanged.
#[tokio::test]
async fn the_node_client_passes_over_tls_with_credentials_and_is_refused_without() {
    let Some(node_dir) = node_dir() else { return };
    let env =
        TestEnv::start_with(|config| config.security = Security::secure(&config.data_dir).expect("security")).await;
    let server = env.server();
    let ca = server.ca_file().expect("a generated CA").display().to_string();
    let right = server.connection_string();
    let anonymous = format!("esdb://{}?tls=true&tlsCAFile={ca}", server.local_addr());
    let wrong = format!("esdb://admin:wrong@{}?tls=true&tlsCAFile={ca}", server.local_addr());
    assert!(right.contains("@") && right.contains("tlsCAFile="), "the server hands out a secure connection string");
    run_script(&node_dir, "conformance.mjs", &[right, anonymous, wrong]).await;
}

/// Persistent subscriptions through the Node client: management calls and
/// their errors, where a group starts, competing consumers, the subscriber
/// limit and a filtered group on `$all` (`persistent.mjs`).
#[tokio::test]
async fn the_node_client_drives_persistent_subscriptions() {
    let Some(node_dir) = node_dir() else { return };
    let env = TestEnv::start().await;
    run_script(&node_dir, "persistent.mjs", &[env.server().connection_string()]).await;
}

/// Persistent subscriptions through the Node client when consumers do not
/// simply ack: nacks (retry, skip, park and replay), retries past
/// maxRetryCount, message timeouts, and a restart of the subsystem
/// (`persistent-failures.mjs`).
#[tokio::test]
async fn the_node_client_sees_persistent_subscriptions_retry_park_and_restart() {
    let Some(node_dir) = node_dir() else { return };
    let env = TestEnv::start().await;
    run_script(&node_dir, "persistent-failures.mjs", &[env.server().connection_string()]).await;
}

/// The directory of the Node.js scripts, or `None` (skipping) without the opt-in.
fn node_dir() -> Option<PathBuf> {
    if std::env::var_os("PROJECTOR_NODE_TESTS").is_none() {
        eprintln!("skipping the Node.js client test: set PROJECTOR_NODE_TESTS=1 (the README's test command does)");
        return None;
    }
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        node_dir.join("node_modules/@eventstore/db-client").is_dir(),
        "run `npm ci` in {} first",
        node_dir.display()
    );
    Some(node_dir)
}

/// Runs `node <script> <connections...>` in `node_dir`; it must exit 0 and print "all checks passed".
async fn run_script(node_dir: &Path, script: &str, connections: &[String]) {
    let output = within(
        &format!("the Node.js script {script}"),
        tokio::process::Command::new("node")
            .arg(script)
            .args(connections)
            .current_dir(node_dir)
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node {script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("all checks passed"), "stdout:\n{stdout}");
}
