//! Lanes sharing the host's reads of `$all`: many projections at the head
//! read one subscription between them, a lane far behind reads on its own
//! and joins the shared read at its exact checkpoint, and each applies
//! exactly the events it wants, once, whatever read delivered them.

use eventstore::{AppendToStreamOptions, EventData};
use projector_tests::{within, PATIENCE};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::tally::{self, V1};
use crate::support::HostEnv;

/// Appends `count` events on streams `tally` does not follow, in appends of 500.
async fn noise(events: &eventstore::Client, count: u64) -> u64 {
    let mut last = 0;
    for start in (0..count).step_by(500) {
        let batch: Vec<EventData> = (start..(start + 500).min(count))
            .map(|n| EventData::json("Noise", &json!({ "n": n })).expect("event"))
            .collect();
        let stream = format!("noise-{}", start / 500);
        last = events
            .append_to_stream(stream, &AppendToStreamOptions::default(), batch)
            .await
            .expect("append")
            .position
            .commit;
    }
    last
}

/// A host whose `at_least` waits as long as the tests do: a catch-up of
/// tens of thousands of events may take seconds on a slow machine.
async fn patient_host() -> HostEnv {
    HostEnv::start_adjusted(|config| config.at_least_wait = PATIENCE).await
}

/// The number of `events` documents of the tally deployed as `name`, and its total count, at `at_least`.
async fn counted(env: &HostEnv, name: &str, at_least: u64) -> (u64, u64) {
    let total = tally::total(env.api(), name, at_least).await;
    let (status, body) = env.get(&format!("/projections/{name}/collections/events?count=true")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (body["count"].as_u64().expect("count"), total["count"].as_u64().expect("total"))
}

/// Waits until the host reads `$all` through `readers` subscriptions; a
/// lane changes reads between two batches, so each round appends an event.
async fn readers(env: &HostEnv, readers: usize) {
    within("the host's reads of $all to settle", async {
        let deployments = env.host().deployments();
        while deployments.feed_readers() != readers {
            let position = noise(&env.events, 1).await;
            deployments.head().reached(position).await;
        }
    })
    .await;
}

#[tokio::test]
async fn lanes_at_the_head_share_one_read_and_each_applies_exactly_its_events() {
    let env = patient_host().await;
    let names: Vec<String> = (0..8).map(|i| format!("tally-{i}")).collect();
    for name in &names {
        let (status, body) = env.deploy(name, V1).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Events arrive while the lanes run: counted ones among others.
    let mut expected = 0;
    let mut last = 0;
    for round in 0..10 {
        noise(&env.events, 300).await;
        let (_, position) = tally::append(&env.events, &format!("tally-{round}"), 40).await;
        expected += 40;
        last = position;
    }
    for name in &names {
        assert_eq!(counted(&env, name, last).await, (expected, expected), "{name}: every counted event once");
    }
    // All of them at the head: the host's one live read serves them all.
    let last = noise(&env.events, 10).await;
    for name in &names {
        tally::total(env.api(), name, last).await;
    }
    readers(&env, 1).await;
    let text = env.http.get(env.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(text.lines().any(|l| l == "projector_feed_readers 1"), "{text}");
}

#[tokio::test]
async fn a_lane_far_behind_reads_alone_then_joins_the_live_read_at_its_exact_checkpoint() {
    let env = patient_host().await;
    let (status, body) = env.deploy("early", V1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A history longer than the live read keeps: a new lane cannot start from it.
    let mut expected = 0;
    for round in 0..8 {
        noise(&env.events, 5_000).await;
        tally::append(&env.events, &format!("tally-{round}"), 100).await;
        expected += 100;
    }
    let (status, body) = env.deploy("late", V1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // It catches up while more arrives; it joins the live read on the way.
    let mut last = 0;
    for round in 0..20 {
        noise(&env.events, 200).await;
        let (_, position) = tally::append(&env.events, &format!("tally-late-{round}"), 10).await;
        expected += 10;
        last = position;
    }
    for name in ["early", "late"] {
        assert_eq!(counted(&env, name, last).await, (expected, expected), "{name}: every counted event once");
    }
    readers(&env, 1).await;
    let (_, position) = tally::append(&env.events, "tally-end", 5).await;
    for name in ["early", "late"] {
        assert_eq!(counted(&env, name, position).await, (expected + 5, expected + 5), "{name} after joining");
    }
}

#[tokio::test]
async fn lanes_deployed_together_over_a_long_history_catch_up_on_shared_reads_exactly() {
    let env = patient_host().await;
    let mut expected = 0;
    for round in 0..6 {
        noise(&env.events, 5_000).await;
        tally::append(&env.events, &format!("tally-{round}"), 200).await;
        expected += 200;
    }
    // Deployed one after the other while appends go on: they start at the
    // same place, read together, move between reads and end on the live one.
    let names: Vec<String> = (0..5).map(|i| format!("together-{i}")).collect();
    let mut last = 0;
    for (round, name) in names.iter().enumerate() {
        let (status, body) = env.deploy(name, V1).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        noise(&env.events, 1_000).await;
        let (_, position) = tally::append(&env.events, &format!("tally-during-{round}"), 20).await;
        expected += 20;
        last = position;
    }
    for name in &names {
        assert_eq!(counted(&env, name, last).await, (expected, expected), "{name}: every counted event once");
    }
    readers(&env, 1).await;
}
