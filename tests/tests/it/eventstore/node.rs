//! The official Node.js client (`@eventstore/db-client`), which sends every
//! append through `BatchAppend` and decodes failures from typed status
//! details. Opt-in with `PROJECTOR_NODE_TESTS=1` because it needs `node` and
//! the package installed by `npm ci` in `tests/node` (the README's test
//! command does both).

use std::path::Path;
use std::process::Stdio;

use projector_tests::{within, TestEnv};

#[tokio::test]
async fn the_node_client_passes_its_conformance_script() {
    if std::env::var_os("PROJECTOR_NODE_TESTS").is_none() {
        eprintln!("skipping the Node.js client test: set PROJECTOR_NODE_TESTS=1 (the README's test command does)");
        return;
    }
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        node_dir.join("node_modules/@eventstore/db-client").is_dir(),
        "run `npm ci` in {} first",
        node_dir.display()
    );
    let env = TestEnv::start().await;
    let output = within(
        "the Node.js conformance script",
        tokio::process::Command::new("node")
            .arg("conformance.mjs")
            .arg(env.server().connection_string())
            .current_dir(&node_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node script failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("all checks passed"), "stdout:\n{stdout}");
}
