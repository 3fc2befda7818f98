//! The web console in a real browser: Debian's Chromium, headless, driven
//! by `tests/console/console.test.mjs` (playwright-core, no browser
//! download) against a host with the three examples and a faulted module.
//! Opt-in with `PROJECTOR_BROWSER` (the Chromium executable) and the
//! package installed by `npm ci` in `tests/console`; the README's test
//! command does both. Screenshots of each page land in
//! `target/console-screenshots`.

use std::path::Path;
use std::process::Stdio;

use projector::status::State;
use projector_tests::within;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{register, HostEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_tries_deploys_and_queries_in_a_real_browser() {
    let Some(browser) = std::env::var_os("PROJECTOR_BROWSER") else {
        eprintln!(
            "skipping the browser test: set PROJECTOR_BROWSER to Chromium's path (the README's test command does)"
        );
        return;
    };
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    assert!(script_dir.join("node_modules/playwright-core").is_dir(), "run `npm ci` in {} first", script_dir.display());
    let env = HostEnv::start().await;
    for n in 0..5 {
        register(&env, n, &format!("user{n}@example.com")).await;
    }
    for (name, module) in [
        ("user-directory", env!("WASM_USER_DIRECTORY")),
        ("signup-stats", env!("WASM_SIGNUP_STATS")),
        ("inventory", env!("WASM_INVENTORY")),
        ("panicking", env!("WASM_GUEST_PANICKING")),
    ] {
        let (status, body) = env.deploy(name, module).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }
    let boom = projector_tests::json_event("Boom", json!({}));
    env.events.append_to_stream("boom-1", &Default::default(), boom).await.expect("append");
    env.wait_status("panicking", "the panicking module to fault", |s| s.state == State::Faulted).await;

    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let output = within(
        "the browser script",
        tokio::process::Command::new("node")
            .arg("console.test.mjs")
            .current_dir(&script_dir)
            .env("PROJECTOR_URL", env.url(""))
            .env("PROJECTOR_TOKEN", env.token())
            .env("PROJECTOR_BROWSER", &browser)
            .env("WASM_TALLY", env!("WASM_GUEST_TALLY"))
            .env("WASM_TALLY_V2", env!("WASM_GUEST_TALLY_V2"))
            .env("SCREENSHOTS", &screenshots)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("run node");
    let report = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the console failed in the browser (screenshots in {}):\n{report}",
        screenshots.display()
    );
    for step in ["read-only", "overview", "fault", "stop-start", "deploy", "try", "explore"] {
        assert!(report.contains(&format!("ok {step}\n")), "step {step} did not run:\n{report}");
        assert!(screenshots.join(format!("{step}.png")).is_file(), "no screenshot of {step}");
    }
}
