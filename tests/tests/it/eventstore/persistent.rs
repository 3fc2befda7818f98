//! Persistent subscriptions through the official Rust client: management
//! calls, competing consumers, acks and every nack, timeouts, parking and
//! replay, durability across a restart, pinned consumers, backpressure.
//!
//! A consumer has joined its group once `subscribe_to_persistent_subscription`
//! has returned (the server answers the call after the join), so no test
//! waits for a join.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eventstore::{
    NakAction, PersistentSubscription, PersistentSubscriptionEvent, PersistentSubscriptionOptions,
    PersistentSubscriptionToAllOptions, ReplayParkedMessagesOptions, ResolvedEvent, StreamPosition,
    SubscribeToPersistentSubscriptionOptions, SubscriptionFilter, SystemConsumerStrategy,
};
use projector_tests::{collect, json_event, within, TestEnv};
use serde_json::json;

async fn append_numbers(client: &eventstore::Client, stream: &str, range: std::ops::Range<u64>) {
    let events = range.map(|n| json_event("Counted", json!({"n": n}))).collect::<Vec<_>>();
    client.append_to_stream(stream, &Default::default(), events).await.expect("append");
}

/// The number in the event's data (the event a resolved link points to, for a link).
fn number(event: &ResolvedEvent) -> u64 {
    serde_json::from_slice::<serde_json::Value>(&event.event.as_ref().expect("an event").data).expect("json")["n"]
        .as_u64()
        .expect("n")
}

fn from_start() -> PersistentSubscriptionOptions {
    PersistentSubscriptionOptions::default().start_from(StreamPosition::Start)
}

async fn subscribe(client: &eventstore::Client, stream: &str, group: &str, buffer: usize) -> PersistentSubscription {
    let options = SubscribeToPersistentSubscriptionOptions::default().buffer_size(buffer);
    within("the subscribe call", client.subscribe_to_persistent_subscription(stream, group, &options))
        .await
        .expect("subscribed")
}

/// The next event: its number, its retry count, and the event to ack.
async fn next(sub: &mut PersistentSubscription) -> (u64, usize, ResolvedEvent) {
    loop {
        match within("a persistent subscription event", sub.next_subscription_event()).await.expect("an event") {
            PersistentSubscriptionEvent::EventAppeared { retry_count, event } => {
                return (number(&event), retry_count, event)
            }
            PersistentSubscriptionEvent::Confirmed(id) => assert!(id.contains("::"), "confirmation id {id}"),
        }
    }
}

async fn info(client: &eventstore::Client, stream: &str, group: &str) -> eventstore::PersistentSubscriptionInfo<u64> {
    client.get_persistent_subscription_info(stream, group, &Default::default()).await.expect("info")
}

/// Asks for the group's info every 10 ms until `holds`, and returns it.
async fn info_until(
    client: &eventstore::Client,
    stream: &str,
    group: &str,
    what: &str,
    holds: impl Fn(&eventstore::PersistentSubscriptionInfo<u64>) -> bool,
) -> eventstore::PersistentSubscriptionInfo<u64> {
    within(what, async {
        loop {
            let info = info(client, stream, group).await;
            if holds(&info) {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn groups_are_created_described_listed_updated_and_deleted() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "orders", 0..3).await;
    let options = from_start()
        .max_retry_count(3)
        .message_timeout(Duration::from_millis(1500))
        .history_buffer_size(40)
        .live_buffer_size(30)
        .read_batch_size(7)
        .checkpoint_lower_bound(2)
        .checkpoint_upper_bound(9)
        .max_subscriber_count(4)
        .consumer_strategy_name(SystemConsumerStrategy::DispatchToSingle);
    client.create_persistent_subscription("orders", "billing", &options).await.expect("create");
    let again = client.create_persistent_subscription("orders", "billing", &options).await;
    assert!(matches!(again, Err(eventstore::Error::ResourceAlreadyExists)), "{again:?}");

    let described = info(&client, "orders", "billing").await;
    assert_eq!((described.event_source.as_str(), described.group_name.as_str()), ("orders", "billing"));
    let settings = described.settings.expect("settings");
    assert_eq!(settings.start_from, StreamPosition::Start);
    assert_eq!(settings.max_retry_count, 3);
    assert_eq!(settings.message_timeout, Duration::from_millis(1500));
    assert_eq!((settings.history_buffer_size, settings.live_buffer_size, settings.read_batch_size), (40, 30, 7));
    assert_eq!((settings.checkpoint_lower_bound, settings.checkpoint_upper_bound), (2, 9));
    assert_eq!(settings.max_subscriber_count, 4);
    assert_eq!(settings.consumer_strategy_name, SystemConsumerStrategy::DispatchToSingle);
    assert_eq!(described.stats.last_known_event_revision, Some(2));

    let all = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().add_prefix("orders"));
    client.create_persistent_subscription_to_all("audit", &all).await.expect("create to $all");
    let listed: Vec<_> = client
        .list_all_persistent_subscriptions(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .map(|i| (i.event_source, i.group_name))
        .collect();
    assert_eq!(listed, [("$all".to_owned(), "audit".to_owned()), ("orders".to_owned(), "billing".to_owned())]);
    let for_stream =
        client.list_persistent_subscriptions_for_stream("orders", &Default::default()).await.expect("list");
    assert_eq!(for_stream.len(), 1);
    let to_all = client.list_persistent_subscriptions_to_all(&Default::default()).await.expect("list $all");
    assert_eq!(to_all.iter().map(|i| i.group_name.as_str()).collect::<Vec<_>>(), ["audit"]);

    let updated = options.max_retry_count(8).consumer_strategy_name(SystemConsumerStrategy::Pinned);
    client.update_persistent_subscription("orders", "billing", &updated).await.expect("update");
    let settings = info(&client, "orders", "billing").await.settings.expect("settings");
    assert_eq!((settings.max_retry_count, settings.consumer_strategy_name), (8, SystemConsumerStrategy::Pinned));
    let missing = client.update_persistent_subscription("orders", "nobody", &updated).await;
    assert!(matches!(missing, Err(eventstore::Error::ResourceNotFound)), "{missing:?}");

    client.delete_persistent_subscription("orders", "billing", &Default::default()).await.expect("delete");
    let gone = client.get_persistent_subscription_info("orders", "billing", &Default::default()).await;
    assert!(matches!(gone, Err(eventstore::Error::ResourceNotFound)), "{gone:?}");
    let options = SubscribeToPersistentSubscriptionOptions::default();
    let refused = client.subscribe_to_persistent_subscription("orders", "billing", &options).await;
    assert!(matches!(refused, Err(eventstore::Error::ResourceNotFound)), "the call itself fails: {:?}", refused.err());
    client.delete_persistent_subscription_to_all("audit", &Default::default()).await.expect("delete $all group");
    assert!(client.list_all_persistent_subscriptions(&Default::default()).await.expect("list").is_empty());
    let none = client.list_persistent_subscriptions_for_stream("orders", &Default::default()).await;
    assert!(matches!(none, Err(eventstore::Error::ResourceNotFound)), "no group for a stream is not found: {none:?}");

    let invalid = client.create_persistent_subscription("orders", "bad", &from_start().read_batch_size(0)).await;
    assert!(format!("{invalid:?}").contains("read batch size"), "{invalid:?}");
    let huge = client.create_persistent_subscription("orders", "bad", &from_start().live_buffer_size(1 << 30)).await;
    assert!(format!("{huge:?}").contains("at most 100000"), "{huge:?}");
    let all = client.create_persistent_subscription("$all", "bad", &from_start()).await;
    assert!(format!("{all:?}").contains("not a stream"), "{all:?}");
    assert!(client.list_all_persistent_subscriptions(&Default::default()).await.expect("list").is_empty());
}

#[tokio::test]
async fn competing_consumers_split_a_stream_and_each_ack_ends_an_event_once() {
    let env = TestEnv::start().await;
    let client = env.client();
    client.create_persistent_subscription("jobs", "workers", &from_start()).await.expect("create");
    let mut first = subscribe(&client, "jobs", "workers", 5).await;
    let mut second = subscribe(&client, "jobs", "workers", 5).await;
    append_numbers(&client, "jobs", 0..100).await;

    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let (mut by_first, mut by_second) = (0, 0);
    while seen.len() < 100 {
        tokio::select! {
            (n, retries, event) = next(&mut first) => {
                assert_eq!(retries, 0);
                *seen.entry(n).or_default() += 1;
                by_first += 1;
                first.ack(event).await.expect("ack");
            }
            (n, retries, event) = next(&mut second) => {
                assert_eq!(retries, 0);
                *seen.entry(n).or_default() += 1;
                by_second += 1;
                second.ack(event).await.expect("ack");
            }
        }
    }
    assert!(seen.values().all(|&times| times == 1), "each event delivered once: {seen:?}");
    assert!(by_first >= 10 && by_second >= 10, "round robin shares the work: {by_first} / {by_second}");
    // Acks travel apart from the info call: wait for the last to arrive.
    let stats =
        info_until(&client, "jobs", "workers", "the last ack", |i| i.stats.total_in_flight_messages == 0).await.stats;
    assert_eq!(stats.total_items, 100, "delivered 100 times in all");
}

#[tokio::test]
async fn nacks_retry_skip_park_and_parked_events_replay() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "mail", 0..3).await;
    client.create_persistent_subscription("mail", "senders", &from_start()).await.expect("create");
    let mut sub = subscribe(&client, "mail", "senders", 1).await;

    let (n, retries, event) = next(&mut sub).await;
    assert_eq!((n, retries), (0, 0));
    sub.nack(event, NakAction::Retry, "try again").await.expect("nack");
    let (n, retries, event) = next(&mut sub).await;
    assert_eq!((n, retries), (0, 1), "a retried event comes back with its retry count");
    sub.nack(event, NakAction::Skip, "not for us").await.expect("skip");
    let (n, _, event) = next(&mut sub).await;
    assert_eq!(n, 1, "a skipped event does not come back");
    sub.nack(event, NakAction::Park, "poison").await.expect("park");
    let (n, _, event) = next(&mut sub).await;
    assert_eq!(n, 2);
    sub.ack(event).await.expect("ack");

    let parked = collect(
        client.read_stream("$persistentsubscription-mail::senders-parked", &Default::default()).await.expect("read"),
    )
    .await
    .expect("the parked stream");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].get_original_event().event_type, "$>");
    assert_eq!(&parked[0].get_original_event().data[..], b"1@mail");
    assert_eq!(info(&client, "mail", "senders").await.stats.parked_message_count, 1);

    client.replay_parked_messages("mail", "senders", &ReplayParkedMessagesOptions::default()).await.expect("replay");
    let (n, _, event) = next(&mut sub).await;
    assert_eq!(n, 1, "the parked event is delivered again");
    sub.ack(event).await.expect("ack");
    assert_eq!(info(&client, "mail", "senders").await.stats.parked_message_count, 0);
}

#[tokio::test]
async fn an_event_not_acked_in_time_is_redelivered_and_parked_after_its_retries() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "slow", 0..2).await;
    let options = from_start().message_timeout(Duration::from_millis(200)).max_retry_count(2);
    client.create_persistent_subscription("slow", "g", &options).await.expect("create");
    // Room for one event: the next comes only once the first has left this consumer.
    let mut sub = subscribe(&client, "slow", "g", 1).await;
    // Never acked: delivered, then retried twice on timeout, then parked.
    for expected_retries in 0..=2 {
        let (n, retries, _) = next(&mut sub).await;
        assert_eq!((n, retries), (0, expected_retries));
    }
    let (n, _, event) = next(&mut sub).await;
    assert_eq!(n, 1, "the group goes on once the first is parked");
    sub.ack(event).await.expect("ack");
    let parked = client.read_stream("$persistentsubscription-slow::g-parked", &Default::default()).await;
    let parked = collect(parked.expect("read")).await.expect("parked stream");
    assert_eq!(parked.len(), 1, "parked after its last retry");
    client.replay_parked_messages("slow", "g", &ReplayParkedMessagesOptions::default()).await.expect("replay");
    let (n, retries, event) = next(&mut sub).await;
    assert_eq!((n, retries), (0, 0));
    sub.ack(event).await.expect("ack");
}

#[tokio::test]
async fn a_restart_keeps_each_groups_position_and_parked_events() {
    let mut env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "ledger", 0..10).await;
    client.create_persistent_subscription("ledger", "g", &from_start()).await.expect("create");
    {
        let mut sub = subscribe(&client, "ledger", "g", 20).await;
        for expected in 0..10 {
            let (n, _, event) = next(&mut sub).await;
            assert_eq!(n, expected);
            match n {
                0..=5 => sub.ack(event).await.expect("ack"),
                6 => sub.nack(event, NakAction::Park, "bad").await.expect("park"),
                _ => {} // 7, 8, 9 stay in flight
            }
        }
        // The parked stream gets its link before the group goes on, so it is the sign that
        // the acks sent before the nack have arrived too.
        info_until(&client, "ledger", "g", "the park", |i| i.stats.parked_message_count == 1).await;
    }
    env.restart_in_place().await;
    let client = env.client();
    assert_eq!(info(&client, "ledger", "g").await.stats.parked_message_count, 1);
    let mut sub = subscribe(&client, "ledger", "g", 20).await;
    for expected in 7..10 {
        let (n, _, event) = next(&mut sub).await;
        assert_eq!(n, expected, "resumes after what was done before the restart");
        sub.ack(event).await.expect("ack");
    }
    client.replay_parked_messages("ledger", "g", &Default::default()).await.expect("replay");
    let (n, _, event) = next(&mut sub).await;
    assert_eq!(n, 6, "the parked event survived the restart");
    sub.ack(event).await.expect("ack");

    // Restarting the subsystem drops consumers; a new one goes on from the group's position.
    append_numbers(&client, "ledger", 10..12).await;
    let (n, _, _) = next(&mut sub).await;
    assert_eq!(n, 10);
    // Acks of 7-9 and the replayed 6 have arrived once only 10 (and maybe 11) are in flight.
    let done = |i: &eventstore::PersistentSubscriptionInfo<u64>| {
        i.stats.total_in_flight_messages <= 2 && i.stats.parked_message_count == 0
    };
    info_until(&client, "ledger", "g", "the acks before the restart", done).await;
    client.restart_persistent_subscription_subsystem(&Default::default()).await.expect("restart");
    // Event 11 may have reached the consumer before the restart; then the drop.
    let dropped = within("the drop", async {
        loop {
            match sub.next_subscription_event().await {
                Ok(PersistentSubscriptionEvent::EventAppeared { event, .. }) => assert_eq!(number(&event), 11),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => return e,
            }
        }
    })
    .await;
    assert!(format!("{dropped}").contains("dropped"), "the consumer is dropped: {dropped}");
    let mut sub = subscribe(&client, "ledger", "g", 20).await;
    let (n, _, _) = next(&mut sub).await;
    assert_eq!(n, 10, "the event in flight at the restart is delivered again");
}

/// A `$all` group "pinned" over the streams `pin-*`, with the pinned strategy.
async fn create_pinned_group(client: &eventstore::Client) {
    let options = PersistentSubscriptionToAllOptions::default()
        .filter(SubscriptionFilter::on_stream_name().add_prefix("pin-"))
        .consumer_strategy_name(SystemConsumerStrategy::Pinned);
    client.create_persistent_subscription_to_all("pinned", &options).await.expect("create");
}

async fn join_pinned(client: &eventstore::Client, buffer: usize) -> PersistentSubscription {
    let options = SubscribeToPersistentSubscriptionOptions::default().buffer_size(buffer);
    client.subscribe_to_persistent_subscription_to_all("pinned", &options).await.expect("subscribe")
}

#[tokio::test]
async fn a_pinned_group_keeps_each_stream_on_one_consumer() {
    let env = TestEnv::start().await;
    let client = env.client();
    create_pinned_group(&client).await;
    let mut consumers = [join_pinned(&client, 50).await, join_pinned(&client, 50).await];
    for round in 0..4 {
        for stream in 0..16 {
            append_numbers(&client, &format!("pin-{stream}"), round..round + 1).await;
        }
        append_numbers(&client, "other", round..round + 1).await;
    }
    let mut owner: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut received = 0;
    while received < 64 {
        let (which, event) = {
            let [first, second] = &mut consumers;
            tokio::select! {
                (_, _, e) = next(first) => (0, e),
                (_, _, e) = next(second) => (1, e),
            }
        };
        let stream = event.get_original_event().stream_id.clone();
        assert!(stream.starts_with("pin-"), "the filter keeps other streams out: {stream}");
        owner.entry(stream).or_default().insert(which);
        consumers[which].ack(event).await.expect("ack");
        received += 1;
    }
    assert_eq!(owner.len(), 16);
    assert!(owner.values().all(|c| c.len() == 1), "each stream on one consumer: {owner:?}");
    let used: BTreeSet<usize> = owner.values().flatten().copied().collect();
    assert_eq!(used.len(), 2, "both consumers own streams: {owner:?}");
}

#[tokio::test]
async fn a_consumer_that_never_acks_gets_its_buffer_and_the_group_goes_on_without_it() {
    let env = TestEnv::start().await;
    let client = env.client();
    // A timeout longer than the test: the stuck consumer keeps what it holds.
    let options = from_start()
        .history_buffer_size(50)
        .live_buffer_size(50)
        .read_batch_size(10)
        .message_timeout(Duration::from_secs(600));
    client.create_persistent_subscription("feed", "g", &options).await.expect("create");
    append_numbers(&client, "feed", 0..2000).await;

    let mut stuck = subscribe(&client, "feed", "g", 5).await;
    let mut held = BTreeSet::new();
    for _ in 0..5 {
        held.insert(next(&mut stuck).await.0);
    }
    let stats = info(&client, "feed", "g").await.stats;
    assert_eq!(stats.total_in_flight_messages, 5, "no more than its buffer");
    let read_ahead = stats.read_buffer_count + stats.live_buffer_count;
    assert!((1..=50).contains(&read_ahead), "the group reads ahead at most its buffer, not the stream: {read_ahead}");

    let mut worker = subscribe(&client, "feed", "g", 20).await;
    let mut done = BTreeSet::new();
    while done.len() < 1995 {
        let (n, retries, event) = next(&mut worker).await;
        assert_eq!(retries, 0);
        assert!(!held.contains(&n) && done.insert(n), "event {n} delivered to one consumer once");
        worker.ack(event).await.expect("ack");
    }
    let described = info(&client, "feed", "g").await;
    let counts: Vec<_> = described.connections.iter().map(|c| (c.total_items, c.in_flight_messages)).collect();
    assert!(counts.contains(&(5, 5)), "the stuck consumer still holds exactly its 5: {counts:?}");
    assert_eq!(described.stats.total_items, 2000);
}

#[tokio::test]
async fn links_resolve_when_asked_and_the_subscriber_limit_holds() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "target", 0..2).await;
    let link = eventstore::EventData::binary("$>", bytes::Bytes::from_static(b"1@target"));
    client.append_to_stream("links", &Default::default(), link).await.expect("append a link");
    let options = from_start().resolve_link_tos(true).max_subscriber_count(1);
    client.create_persistent_subscription("links", "g", &options).await.expect("create");
    let mut sub = subscribe(&client, "links", "g", 10).await;
    let (n, _, event) = next(&mut sub).await;
    assert_eq!(n, 1, "the event the link points to");
    let link = event.link.as_ref().expect("the link beside it");
    assert_eq!((link.stream_id.as_str(), link.event_type.as_str()), ("links", "$>"));
    sub.ack(event).await.expect("ack");

    let second = client
        .subscribe_to_persistent_subscription("links", "g", &SubscribeToPersistentSubscriptionOptions::default())
        .await;
    let message = format!("{:?}", second.err());
    assert!(message.contains("maximum of 1"), "a second subscriber is refused: {message}");
}

#[tokio::test]
async fn events_held_by_a_consumer_that_leaves_go_to_another() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "tasks", 0..5).await;
    client.create_persistent_subscription("tasks", "g", &from_start()).await.expect("create");
    let mut leaving = subscribe(&client, "tasks", "g", 3).await;
    for expected in 0..3 {
        assert_eq!(next(&mut leaving).await.0, expected);
    }
    drop(leaving);
    let mut staying = subscribe(&client, "tasks", "g", 10).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let (n, retries, event) = next(&mut staying).await;
        got.push((n, retries));
        staying.ack(event).await.expect("ack");
    }
    got.sort();
    assert_eq!(got, [(0, 1), (1, 1), (2, 1), (3, 0), (4, 0)], "the three held events come back as retries");
}

#[tokio::test]
async fn a_filtered_group_over_all_reaches_events_past_long_runs_it_filters_out() {
    let env = TestEnv::start().await;
    let client = env.client();
    // More than one scan's worth of events the filter drops, then the ones it keeps.
    for batch in 0..10 {
        append_numbers(&client, "noise", batch * 1000..(batch + 1) * 1000).await;
    }
    append_numbers(&client, "wanted-1", 0..3).await;
    let options = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().add_prefix("wanted-"));
    client.create_persistent_subscription_to_all("picky", &options).await.expect("create");
    let options = SubscribeToPersistentSubscriptionOptions::default();
    let mut sub = client.subscribe_to_persistent_subscription_to_all("picky", &options).await.expect("subscribe");
    for expected in 0..3 {
        let (n, _, event) = next(&mut sub).await;
        assert_eq!((n, event.get_original_event().stream_id.as_str()), (expected, "wanted-1"));
        sub.ack(event).await.expect("ack");
    }
}

/// The checkpoints a group has written, oldest first, as the checkpoint stream holds them.
async fn checkpoints(client: &eventstore::Client, stream: &str, group: &str) -> Vec<String> {
    let name = format!("$persistentsubscription-{stream}::{group}-checkpoint");
    let read = client.read_stream(name.as_str(), &Default::default()).await.expect("read");
    let events = collect(read).await.expect("the checkpoint stream");
    events.iter().map(|e| serde_json::from_slice(&e.get_original_event().data).expect("a JSON string")).collect()
}

/// Waits until the group's info reports a checkpoint at or past `revision`; returns it.
async fn checkpointed(client: &eventstore::Client, stream: &str, group: &str, revision: u64) -> u64 {
    let reached = |i: &eventstore::PersistentSubscriptionInfo<u64>| {
        i.stats.last_checkpointed_event_revision.is_some_and(|at| at >= revision)
    };
    let info = info_until(client, stream, group, "the checkpoint", reached).await;
    info.stats.last_checkpointed_event_revision.expect("checked")
}

#[tokio::test]
async fn checkpoints_are_written_by_count_and_by_time_into_the_checkpoint_stream() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "counted", 0..5).await;
    // By count: at most 2 events done between checkpoints, and the time never comes.
    let by_count =
        from_start().checkpoint_lower_bound(1).checkpoint_upper_bound(2).checkpoint_after(Duration::from_secs(3600));
    client.create_persistent_subscription("counted", "g", &by_count).await.expect("create");
    let mut sub = subscribe(&client, "counted", "g", 10).await;
    for _ in 0..5 {
        let (_, _, event) = next(&mut sub).await;
        sub.ack(event).await.expect("ack");
    }
    // Acks that arrive together are counted together, so the checkpoints fall at 1 and 3, or
    // fewer and later; after five events done, fewer than two are past the last one.
    let last = checkpointed(&client, "counted", "g", 3).await;
    let written = checkpoints(&client, "counted", "g").await;
    assert_eq!(written.last(), Some(&last.to_string()), "info reports the checkpoint stream's last: {written:?}");
    assert!(written.len() <= 2, "a checkpoint per two or more events done: {written:?}");

    // By time: one event done is enough once 100 ms have passed.
    append_numbers(&client, "timed", 0..1).await;
    let by_time = from_start().checkpoint_lower_bound(1).checkpoint_after(Duration::from_millis(100));
    client.create_persistent_subscription("timed", "g", &by_time).await.expect("create");
    let mut sub = subscribe(&client, "timed", "g", 10).await;
    let (_, _, event) = next(&mut sub).await;
    sub.ack(event).await.expect("ack");
    assert_eq!(checkpointed(&client, "timed", "g", 0).await, 0);
    assert_eq!(checkpoints(&client, "timed", "g").await, ["0"]);
}

#[tokio::test]
async fn a_pinned_consumer_that_stops_acking_holds_up_only_its_own_streams() {
    let env = TestEnv::start().await;
    let client = env.client();
    create_pinned_group(&client).await;
    // Alone, the stuck consumer takes the first event and every stream waits behind it.
    let mut stuck = join_pinned(&client, 1).await;
    for stream in 0..16 {
        append_numbers(&client, &format!("pin-{stream}"), 0..1).await;
    }
    let (_, _, held) = next(&mut stuck).await;
    let held_stream = held.get_original_event().stream_id.clone();
    // A second consumer gets its own streams' events at once, not after the stuck one.
    let mut working = join_pinned(&client, 100).await;
    let (_, _, event) = next(&mut working).await;
    let first = event.get_original_event().stream_id.clone();
    assert_ne!(first, held_stream);
    working.ack(event).await.expect("ack");
    // When the stuck one leaves, its streams come to the other, the held event as a retry.
    drop(stuck);
    let mut streams = BTreeSet::from([held_stream.clone(), first]);
    let mut held_again = false;
    while streams.len() < 16 || !held_again {
        let (_, retries, event) = next(&mut working).await;
        let stream = event.get_original_event().stream_id.clone();
        held_again |= stream == held_stream && retries == 1;
        streams.insert(stream);
        working.ack(event).await.expect("ack");
    }
}

#[tokio::test]
async fn an_event_whose_consumers_keep_leaving_is_parked_after_its_retries() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "poison", 0..2).await;
    client.create_persistent_subscription("poison", "g", &from_start().max_retry_count(1)).await.expect("create");
    // Each consumer takes event 0 and dies with it: delivery, one retry, then parked.
    for expected_retries in 0..=1 {
        let mut sub = subscribe(&client, "poison", "g", 1).await;
        let (n, retries, _) = next(&mut sub).await;
        assert_eq!((n, retries), (0, expected_retries));
    }
    info_until(&client, "poison", "g", "the park", |i| i.stats.parked_message_count == 1).await;
    let mut sub = subscribe(&client, "poison", "g", 1).await;
    let (n, _, _) = next(&mut sub).await;
    assert_eq!(n, 1, "the poison event is parked, not delivered a third time");
}

#[tokio::test]
async fn a_restart_before_the_first_checkpoint_loses_nothing() {
    let mut env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "late", 0..3).await;
    // From the end, as both clients default to: the end when the group was created.
    client.create_persistent_subscription("late", "g", &Default::default()).await.expect("create");
    append_numbers(&client, "late", 3..5).await;
    env.restart_in_place().await;
    let client = env.client();
    let mut sub = subscribe(&client, "late", "g", 10).await;
    for expected in 3..5 {
        let (n, _, event) = next(&mut sub).await;
        assert_eq!(n, expected, "events appended after the group was created, before the restart");
        sub.ack(event).await.expect("ack");
    }

    // A replayed parked event not yet acked when the server stops is still parked after it.
    let (_, _, event) = {
        append_numbers(&client, "late", 5..6).await;
        next(&mut sub).await
    };
    sub.nack(event, NakAction::Park, "bad").await.expect("park");
    info_until(&client, "late", "g", "the park", |i| i.stats.parked_message_count == 1).await;
    client.replay_parked_messages("late", "g", &Default::default()).await.expect("replay");
    let (n, _, _) = next(&mut sub).await;
    assert_eq!(n, 5, "replayed, and left unacked");
    drop(sub);
    env.restart_in_place().await;
    let client = env.client();
    assert_eq!(info(&client, "late", "g").await.stats.parked_message_count, 1, "still parked");
    let mut sub = subscribe(&client, "late", "g", 10).await;
    client.replay_parked_messages("late", "g", &Default::default()).await.expect("replay");
    let (n, _, event) = next(&mut sub).await;
    assert_eq!(n, 5);
    sub.ack(event).await.expect("ack");
    info_until(&client, "late", "g", "the replayed event hidden", |i| i.stats.parked_message_count == 0).await;
}

#[tokio::test]
async fn events_sharing_an_id_are_both_delivered_one_after_the_other() {
    let env = TestEnv::start().await;
    let client = env.client();
    let options = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().add_prefix("dup-"));
    client.create_persistent_subscription_to_all("dups", &options).await.expect("create");
    // The store keeps ids unique within a stream, not across streams; acks name events by id.
    let id = uuid::Uuid::new_v4();
    for (stream, n) in [("dup-a", 0), ("dup-b", 1)] {
        let event = json_event("Counted", json!({"n": n})).id(id);
        client.append_to_stream(stream, &Default::default(), event).await.expect("append");
    }
    append_numbers(&client, "dup-c", 2..3).await;
    let options = SubscribeToPersistentSubscriptionOptions::default().buffer_size(10);
    let mut sub = client.subscribe_to_persistent_subscription_to_all("dups", &options).await.expect("subscribe");
    let (n, _, first) = next(&mut sub).await;
    assert_eq!((n, first.get_original_event().id), (0, id));
    sub.ack(first).await.expect("ack");
    // The second waits until the first is acked (an ack could not tell them apart), then comes.
    let (n, _, second) = next(&mut sub).await;
    assert_eq!((n, second.get_original_event().id), (1, id));
    sub.ack(second).await.expect("ack");
    assert_eq!(next(&mut sub).await.0, 2);
}

#[tokio::test]
async fn a_filter_that_gives_up_faults_the_group_instead_of_skipping_events() {
    let env = TestEnv::start().await;
    let client = env.client();
    // The backreference keeps the regex on the backtracking engine, which gives up on long inputs.
    let options = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().regex(r"^(a|a)*\1b"));
    client.create_persistent_subscription_to_all("fragile", &options).await.expect("create");
    append_numbers(&client, &"a".repeat(40), 0..1).await;
    let faulted = within("the fault", async {
        loop {
            let info = client.get_persistent_subscription_info_to_all("fragile", &Default::default()).await;
            let info = info.expect("info");
            if info.status == "Faulted" {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(faulted.stats.last_checkpointed_position, None, "nothing passed over");
}

#[tokio::test]
async fn a_replay_takes_parked_events_a_buffer_at_a_time_and_delivers_them_all() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "many", 0..30).await;
    let options = from_start().history_buffer_size(10).read_batch_size(5);
    client.create_persistent_subscription("many", "g", &options).await.expect("create");
    let mut sub = subscribe(&client, "many", "g", 1).await;
    for expected in 0..30 {
        let (n, _, event) = next(&mut sub).await;
        assert_eq!(n, expected);
        sub.nack(event, NakAction::Park, "later").await.expect("park");
    }
    info_until(&client, "many", "g", "every event parked", |i| i.stats.parked_message_count == 30).await;
    client.replay_parked_messages("many", "g", &Default::default()).await.expect("replay");
    let (n, _, event) = next(&mut sub).await;
    assert_eq!(n, 0);
    // One held by the consumer, the rest of the group's ten waiting: not the whole parked stream.
    let stats = info(&client, "many", "g").await.stats;
    assert!(stats.retry_buffer_count <= 9, "a replay holds at most its buffer: {}", stats.retry_buffer_count);
    sub.ack(event).await.expect("ack");
    for expected in 1..30 {
        let (n, _, event) = next(&mut sub).await;
        assert_eq!(n, expected, "replayed in the order they were parked");
        sub.ack(event).await.expect("ack");
    }
    info_until(&client, "many", "g", "the replayed events hidden", |i| i.stats.parked_message_count == 0).await;
}
