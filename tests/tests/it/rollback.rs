//! Rollback: back to the previous code on the same read model after a
//! `continue` swap, back to the previous read model after a rebuild (also
//! one under the same version), and a rebuild cancelled before it switches.

use eventstore::{AppendToStreamOptions, EventData};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::lifecycle::seen_by;
use crate::support::tally::{self, V1, V2};
use crate::support::{on_both_backends, Backend, HostEnv};

on_both_backends!(rolling_back_a_continue_swap_and_cancelling_a_rebuild);
async fn rolling_back_a_continue_swap_and_cancelling_a_rebuild(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    env.deploy("tally", V1).await;
    let (status, body) = env.act("tally", "rollback").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{body}");

    env.deploy_with("tally", V2, "mode=continue").await;
    let (_, position) = tally::append(&env.events, "tally-a", 3).await;
    assert_eq!(tally::total(env.api(), "tally", position).await["version"], "2.0.0");
    let (status, body) = env.act("tally", "rollback").await;
    assert_eq!((status, body["version"].as_str()), (StatusCode::OK, Some("1.0.0")), "{body}");
    let (ids, position) = tally::append(&env.events, "tally-b", 3).await;
    assert_eq!(tally::total(env.api(), "tally", position).await, json!({ "count": 6, "version": "1.0.0" }));
    assert_eq!(seen_by(&env, "tally", &ids[0]).await, "1.0.0");

    // A rebuild that is rolled back before it switches is cancelled; the
    // serving version stays. A poison event only the rebuild reads (the
    // serving lane is stopped) keeps it from ever switching, however fast.
    env.act("tally", "stop").await;
    let poison = EventData::json("TallyPoison", &json!({})).expect("event");
    env.events.append_to_stream("tally-c", &AppendToStreamOptions::default(), poison).await.expect("append");
    let (status, body) = env.deploy_with("tally", V2, "mode=rebuild").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = env.deploy_with("tally", V2, "mode=continue").await;
    assert_eq!(status, StatusCode::CONFLICT, "no second change while a rebuild runs: {body}");
    let (status, body) = env.act("tally", "rollback").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["version"].as_str(), &body["rebuild"]), (Some("1.0.0"), &Value::Null), "{body}");
    assert_eq!(env.stored_readmodels("tally").await, 1, "the cancelled rebuild's read model is removed");
}

// A rebuild under the same version: the status tells the two read models
// apart, and a rollback serves the old one again.
on_both_backends!(a_same_version_rebuild_shows_which_read_model_serves_and_which_rollback_returns_to);
async fn a_same_version_rebuild_shows_which_read_model_serves_and_which_rollback_returns_to(backend: Backend) {
    let env = HostEnv::start_on(backend).await;
    let (_, first) = env.deploy("tally", V1).await;
    let (_, position) = tally::append(&env.events, "tally-a", 3).await;
    tally::total(env.api(), "tally", position).await;
    let (status, body) = env.deploy_with("tally", V1, "mode=rebuild").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Both lanes run 1.0.0, so the lane watch cannot tell them apart: the status can.
    let rebuilt =
        env.api().poll_status("tally", "the switch to the rebuilt read model", |s| s["rebuild"].is_null()).await;
    assert_eq!(rebuilt["version"], "1.0.0", "{rebuilt}");
    assert_eq!(rebuilt["previous"], json!({"version": "1.0.0", "read_model": first["read_model"]}), "{rebuilt}");
    assert_ne!(rebuilt["read_model"], first["read_model"], "a rebuild serves a new read model: {rebuilt}");

    let (status, rolled_back) = env.act("tally", "rollback").await;
    assert_eq!(status, StatusCode::OK, "{rolled_back}");
    assert_eq!(rolled_back["read_model"], first["read_model"], "the old read model serves again: {rolled_back}");
    assert_eq!(rolled_back["previous"]["read_model"], rebuilt["read_model"], "{rolled_back}");
}
