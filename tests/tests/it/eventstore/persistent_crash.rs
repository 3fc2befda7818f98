//! Persistent subscriptions against `projector eventstore`, the store as a
//! process of its own, killed with SIGKILL in the middle of a group's work:
//! the group, its checkpoint and its parked event survive; the group goes on
//! right after its last durable checkpoint, so nothing is lost and nothing
//! checkpointed is delivered again.

use std::time::Duration;

use eventstore::{
    NakAction, PersistentSubscriptionOptions, ReplayParkedMessagesOptions, StreamPosition,
    SubscribeToPersistentSubscriptionOptions,
};
use projector_tests::{json_event, within};
use serde_json::json;

use super::kill::start_store;

fn number(event: &eventstore::ResolvedEvent) -> u64 {
    let data: serde_json::Value = serde_json::from_slice(&event.get_original_event().data).expect("json");
    data["n"].as_u64().expect("n")
}

async fn stats(client: &eventstore::Client) -> eventstore::PersistentSubscriptionStats {
    client.get_persistent_subscription_info("work", "g", &Default::default()).await.expect("info").stats
}

#[tokio::test]
async fn a_group_survives_a_kill_of_the_store_process_and_loses_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let (store, client) = start_store(data.path()).await;
    let events: Vec<_> = (0..200).map(|n| json_event("Worked", json!({ "n": n }))).collect();
    client.append_to_stream("work", &Default::default(), events).await.expect("append");
    // A checkpoint after every event done, so the kill finds one close behind.
    let options = PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Start)
        .checkpoint_lower_bound(1)
        .checkpoint_upper_bound(1);
    client.create_persistent_subscription("work", "g", &options).await.expect("create");
    let subscribe = SubscribeToPersistentSubscriptionOptions::default().buffer_size(10);
    let mut sub = client.subscribe_to_persistent_subscription("work", "g", &subscribe).await.expect("subscribe");
    for expected in 0..=100 {
        let event = within("an event", sub.next()).await.expect("event");
        assert_eq!(number(&event), expected);
        if expected < 100 {
            sub.ack(event).await.expect("ack");
        } else {
            sub.nack(event, NakAction::Park, "poison").await.expect("park");
        }
    }
    // The park and the checkpoint past it are durable once the group reports them.
    let checkpoint = within("the checkpoint", async {
        loop {
            let stats = stats(&client).await;
            match stats.last_checkpointed_event_revision {
                Some(at) if at >= 100 && stats.parked_message_count == 1 => return at,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    store.kill();
    drop(sub);

    let (_store, client) = start_store(data.path()).await;
    assert_eq!(stats(&client).await.parked_message_count, 1, "the parked event survived");
    let mut sub = client.subscribe_to_persistent_subscription("work", "g", &subscribe).await.expect("subscribe");
    let first = within("an event", sub.next()).await.expect("event");
    assert_eq!(number(&first), checkpoint + 1, "the group goes on right after its last checkpoint");
    sub.ack(first).await.expect("ack");
    for expected in checkpoint + 2..200 {
        let event = within("an event", sub.next()).await.expect("event");
        assert_eq!(number(&event), expected, "every event after the checkpoint, in order, once");
        sub.ack(event).await.expect("ack");
    }
    client.replay_parked_messages("work", "g", &ReplayParkedMessagesOptions::default()).await.expect("replay");
    let replayed = within("the replayed event", sub.next()).await.expect("event");
    assert_eq!(number(&replayed), 100);
}
