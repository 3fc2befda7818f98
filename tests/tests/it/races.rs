//! A module's fault racing a lifecycle change: whatever the interleaving,
//! the change is applied and answered, the registry holds it together with
//! the fault, and a restart brings back exactly the status the API answered
//! last.
//!
//! Each round appends an event both versions of `tally` refuse (so whichever
//! code meets it faults), waits a seeded few milliseconds (schedule jitter:
//! the runner may be anywhere in that batch when the change arrives; nothing
//! here waits by sleeping), then stops, rolls back, or swaps in the other
//! version. `PROJECTOR_RACE_SEED` replays a run; `PROJECTOR_RACE_ROUNDS`
//! makes it longer.

use std::time::Duration;

use eventstore::{AppendToStreamOptions, EventData};
use projector_tests::{env_number, Seeded};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::tally::{V1, V2};
use crate::support::HostEnv;

const NAME: &str = "race";

async fn append(env: &HostEnv, event_type: &str) -> u64 {
    let event = EventData::json(event_type, &json!({})).expect("event");
    let options = AppendToStreamOptions::default();
    env.events.append_to_stream("tally-race", &options, event).await.expect("append").position.commit
}

/// The fields a restart must bring back as they were.
fn durable(status: &Value) -> Value {
    json!({
        "version": status["version"], "state": status["state"], "fault": status["fault"],
        "checkpoint": status["checkpoint"], "events_processed": status["events_processed"],
        "previous": status["previous"], "on_error": status["on_error"],
    })
}

/// The serving lane as `registry.json` records it.
fn recorded(env: &HostEnv) -> Value {
    let text = std::fs::read_to_string(env.data.path().join("registry.json")).expect("registry");
    let registry: Value = serde_json::from_str(&text).expect("registry json");
    registry["projections"][NAME]["serving"].clone()
}

/// The module built as `version`.
fn module(version: &str) -> &'static str {
    if version == "1.0.0" {
        V1
    } else {
        V2
    }
}

/// The other version.
fn other(version: &str) -> &'static str {
    if version == "1.0.0" {
        "2.0.0"
    } else {
        "1.0.0"
    }
}

/// Brings the projection past the poison event (the other version with
/// `on_error=skip`), then back to `version` with `on_error=fault`, running,
/// so that `rollback` next returns to the other version.
async fn recover(env: &HostEnv, version: &str, poison: u64) {
    let (code, body) = env.deploy_with(NAME, module(other(version)), "on_error=skip").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    if body["state"] == "stopped" {
        let (code, body) = env.act(NAME, "start").await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    let (code, body) = env.get(&format!("/projections/{NAME}/collections/totals/all?at_least={poison}")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = env.deploy_with(NAME, module(version), "on_error=fault").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!((body["version"].as_str(), body["previous"]["version"].as_str()), (Some(version), Some(other(version))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_racing_stop_rollback_or_a_swap_is_kept_with_the_change_across_a_restart() {
    let mut seeded = Seeded::from_env("PROJECTOR_RACE_SEED");
    eprintln!("PROJECTOR_RACE_SEED={}", seeded.seed());
    let rounds = env_number("PROJECTOR_RACE_ROUNDS", 20);
    let mut env = HostEnv::start().await;
    let (code, body) = env.deploy(NAME, V1).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    append(&env, "Tallied").await;
    let (code, body) = env.deploy(NAME, V2).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    for round in 0..rounds {
        let before = env.get(&format!("/projections/{NAME}")).await.1;
        let running = before["version"].as_str().expect("version").to_owned();
        assert_eq!(before["previous"]["version"], other(&running), "rollback would return to the other version");
        let poison = append(&env, "TallyPoison").await;
        tokio::time::sleep(Duration::from_micros(seeded.below(15_000))).await;
        let action = ["stop", "rollback", "swap"][seeded.below(3) as usize];
        let (code, answer) = match action {
            "swap" => env.deploy(NAME, module(other(&running))).await,
            action => env.act(NAME, action).await,
        };
        assert_eq!(code, StatusCode::OK, "round {round}: {action} answered {answer}");
        // The change is applied whatever the runner was doing.
        let expected_version = if action == "stop" { running.as_str() } else { other(&running) };
        assert_eq!(answer["version"], expected_version, "round {round}: {action}: {answer}");
        // Settled: the poison faults every runner that meets it, so the
        // serving lane ends faulted, or stopped by the stop.
        // The registry is read the moment the watch shows it: what is shown must be recorded already.
        let mut at_settling = None;
        let status = env
            .wait_status(NAME, "the projection to settle", |s| {
                let ended = s.state.is_ended();
                if ended && at_settling.is_none() {
                    at_settling = Some(recorded(&env));
                }
                ended
            })
            .await;
        let at_settling = at_settling.expect("read when it settled");
        assert_eq!(at_settling["state"], status["state"], "round {round}: shown before it was recorded: {at_settling}");
        assert_eq!(status["version"], expected_version, "round {round}: {action}: {status}");
        // The registry holds the change and, when the status shows one, the fault.
        let serving = recorded(&env);
        assert_eq!(serving["version"], expected_version, "round {round}: {action}: {serving}");
        match status["state"].as_str() {
            Some("faulted") => {
                assert_eq!(serving["state"], "faulted", "round {round}: {action}: {serving}");
                assert_eq!(serving["fault"], status["fault"], "round {round}: {action}");
                assert_eq!(status["fault"]["position"], poison, "round {round}: the fault names the poison event");
            }
            Some("stopped") => {
                assert_eq!(action, "stop", "round {round}: only a stop stops it: {status}");
                assert_eq!(serving["state"], "stopped", "round {round}: {serving}");
            }
            state => panic!("round {round}: {action} left the projection {state:?}: {status}"),
        }
        env.restart_host().await;
        let (code, restored) = env.get(&format!("/projections/{NAME}")).await;
        assert_eq!(code, StatusCode::OK, "{restored}");
        assert_eq!(durable(&restored), durable(&status), "round {round}: {action}: a restart changed the status");
        recover(&env, expected_version, poison).await;
    }
}
