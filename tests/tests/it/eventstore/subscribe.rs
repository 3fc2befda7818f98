//! Subscriptions: confirmation, catch-up, caught-up, live; exclusive start
//! points; server-side filters with checkpoints, and filter regexes with .NET
//! features (lookaround) that clients send; many concurrent subscribers;
//! a stalled subscriber does not hold up anyone else; an idle filtered
//! subscription stays open.

use eventstore::{
    Position, StreamPosition, SubscribeToAllOptions, SubscribeToStreamOptions, Subscription, SubscriptionEvent,
    SubscriptionFilter,
};
use projector_tests::{json_event, within, TestEnv};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

async fn append_numbers(client: &eventstore::Client, stream: &str, range: std::ops::Range<u64>) {
    let events = range.map(|n| json_event("Counted", json!({"n": n}))).collect::<Vec<_>>();
    client.append_to_stream(stream, &Default::default(), events).await.expect("append");
}

fn number(event: &eventstore::ResolvedEvent) -> u64 {
    serde_json::from_slice::<serde_json::Value>(&event.get_original_event().data).expect("json")["n"]
        .as_u64()
        .expect("n")
}

/// What a subscription delivers, simplified for comparison.
#[derive(Debug, PartialEq)]
enum Seen {
    Confirmed,
    Event(String, u64),
    CaughtUp,
    Checkpoint,
}

async fn next_seen(subscription: &mut Subscription) -> (Seen, Option<Position>) {
    let event = within("a subscription message", subscription.next_subscription_event()).await.expect("subscription");
    match event {
        SubscriptionEvent::Confirmed(_) => (Seen::Confirmed, None),
        SubscriptionEvent::EventAppeared(e) => {
            let stream = e.get_original_event().stream_id.clone();
            (Seen::Event(stream, number(&e)), Some(e.get_original_event().position))
        }
        SubscriptionEvent::CaughtUp => (Seen::CaughtUp, None),
        SubscriptionEvent::Checkpoint(p) => (Seen::Checkpoint, Some(p)),
        other => panic!("unexpected subscription message {other:?}"),
    }
}

async fn take(subscription: &mut Subscription, n: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(next_seen(subscription).await.0);
    }
    seen
}

fn ev(stream: &str, n: u64) -> Seen {
    Seen::Event(stream.into(), n)
}

#[tokio::test]
async fn a_stream_subscription_catches_up_then_goes_live() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "tick", 0..3).await;
    append_numbers(&client, "other", 100..101).await;

    let mut sub = client
        .subscribe_to_stream("tick", &SubscribeToStreamOptions::default().start_from(StreamPosition::Start))
        .await;
    assert_eq!(
        take(&mut sub, 5).await,
        vec![Seen::Confirmed, ev("tick", 0), ev("tick", 1), ev("tick", 2), Seen::CaughtUp]
    );

    append_numbers(&client, "other", 101..102).await;
    append_numbers(&client, "tick", 3..5).await;
    assert_eq!(take(&mut sub, 2).await, vec![ev("tick", 3), ev("tick", 4)], "live events of this stream only");

    // Starting at a revision is exclusive; starting at the end sees only new events.
    let mut from_one = client
        .subscribe_to_stream("tick", &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(1)))
        .await;
    assert_eq!(
        take(&mut from_one, 5).await,
        vec![Seen::Confirmed, ev("tick", 2), ev("tick", 3), ev("tick", 4), Seen::CaughtUp]
    );
    let mut from_end =
        client.subscribe_to_stream("tick", &SubscribeToStreamOptions::default().start_from(StreamPosition::End)).await;
    assert_eq!(take(&mut from_end, 2).await, vec![Seen::Confirmed, Seen::CaughtUp]);
    append_numbers(&client, "tick", 5..6).await;
    assert_eq!(take(&mut from_end, 1).await, vec![ev("tick", 5)]);
}

#[tokio::test]
async fn a_subscription_to_a_stream_that_does_not_exist_yet_waits_for_it() {
    let env = TestEnv::start().await;
    let client = env.client();
    let mut sub = client.subscribe_to_stream("later", &Default::default()).await;
    assert_eq!(take(&mut sub, 2).await, vec![Seen::Confirmed, Seen::CaughtUp]);
    append_numbers(&client, "later", 0..1).await;
    assert_eq!(take(&mut sub, 1).await, vec![ev("later", 0)]);
}

#[tokio::test]
async fn an_all_subscription_resumes_exclusively_after_a_position() {
    let env = TestEnv::start().await;
    let client = env.client();
    append_numbers(&client, "a", 0..2).await;
    append_numbers(&client, "b", 2..4).await;

    let mut sub = client.subscribe_to_all(&SubscribeToAllOptions::default()).await;
    let mut positions = Vec::new();
    assert_eq!(next_seen(&mut sub).await.0, Seen::Confirmed);
    for expected in [ev("a", 0), ev("a", 1), ev("b", 2), ev("b", 3)] {
        let (seen, position) = next_seen(&mut sub).await;
        assert_eq!(seen, expected);
        positions.push(position.expect("event position"));
    }
    assert_eq!(next_seen(&mut sub).await.0, Seen::CaughtUp);
    append_numbers(&client, "c", 4..5).await;
    assert_eq!(next_seen(&mut sub).await.0, ev("c", 4));

    let mut resumed = client
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::Position(positions[1])))
        .await;
    assert_eq!(take(&mut resumed, 5).await, vec![Seen::Confirmed, ev("b", 2), ev("b", 3), ev("c", 4), Seen::CaughtUp]);
}

#[tokio::test]
async fn filtered_all_subscriptions_match_by_prefix_or_regex_and_send_checkpoints() {
    let env = TestEnv::start().await;
    let client = env.client();
    // 40 events that do not match, then one that does, then 40 more that do not.
    append_numbers(&client, "noise-1", 0..40).await;
    append_numbers(&client, "user-1", 40..41).await;
    append_numbers(&client, "noise-2", 41..81).await;

    let by_prefix = SubscriptionFilter::on_stream_name().add_prefix("user-").max(10);
    let mut sub = client.subscribe_to_all(&SubscribeToAllOptions::default().filter(by_prefix)).await;
    let mut seen = Vec::new();
    let mut checkpoints = Vec::new();
    loop {
        let (message, position) = next_seen(&mut sub).await;
        if message == Seen::Checkpoint {
            checkpoints.push(position.expect("checkpoint position"));
            continue;
        }
        if message == Seen::CaughtUp {
            break;
        }
        seen.push(message);
    }
    assert_eq!(seen, vec![Seen::Confirmed, ev("user-1", 40)]);
    assert!(checkpoints.len() >= 2, "a checkpoint per window of scanned events, got {checkpoints:?}");
    assert!(checkpoints.windows(2).all(|w| w[0].commit < w[1].commit), "checkpoints move forward");

    // The last checkpoint covers the trailing non-matching events, so a
    // resumed subscription does not rescan them.
    let last_noise = last_position(&client).await;
    assert_eq!(checkpoints.last().map(|p| p.commit), Some(last_noise.commit), "checkpoints {checkpoints:?}");

    let by_regex = SubscriptionFilter::on_stream_name().regex("^noise-2$");
    let mut sub = client.subscribe_to_all(&SubscribeToAllOptions::default().filter(by_regex)).await;
    let mut messages = Vec::new();
    while messages.len() < 3 {
        match next_seen(&mut sub).await.0 {
            Seen::Checkpoint => {}
            other => messages.push(other),
        }
    }
    assert_eq!(messages, vec![Seen::Confirmed, ev("noise-2", 41), ev("noise-2", 42)]);

    let by_type = SubscriptionFilter::on_event_type().add_prefix("Other");
    let mut sub = client.subscribe_to_all(&SubscribeToAllOptions::default().filter(by_type)).await;
    client
        .append_to_stream("x", &Default::default(), json_event("OtherThing", json!({"n": 500})))
        .await
        .expect("append");
    let mut events = Vec::new();
    while events.is_empty() {
        if let (Seen::Event(stream, n), _) = next_seen(&mut sub).await {
            events.push((stream, n));
        }
    }
    assert_eq!(events, vec![("x".to_owned(), 500)]);
}

/// The filter a client that hides system streams sends with every `$all`
/// read and subscription: a .NET regex with a negative lookahead.
const EXCLUDE_SYSTEM_STREAMS: &str = r"^(?!(\$.+$|PersistentConfig\d+$|Result$))";

/// The events a filtered `$all` subscription delivers while catching up, as
/// (stream, event type); `CaughtUp` marks the end of what was written before.
async fn caught_up_through(client: &eventstore::Client, filter: SubscriptionFilter) -> Vec<(String, String)> {
    let mut sub = client.subscribe_to_all(&SubscribeToAllOptions::default().filter(filter)).await;
    let mut seen = Vec::new();
    loop {
        match within("a subscription message", sub.next_subscription_event()).await.expect("subscription") {
            SubscriptionEvent::EventAppeared(e) => {
                let event = e.get_original_event();
                seen.push((event.stream_id.clone(), event.event_type.clone()));
            }
            SubscriptionEvent::CaughtUp => return seen,
            _ => {}
        }
    }
}

#[tokio::test]
async fn filter_regexes_accept_lookaround_as_eventstoredb_does() {
    let env = TestEnv::start().await;
    let client = env.client();
    for (stream, event_type) in [
        ("$sys-test", "Counted"),
        ("order-1", "OrderPlaced"),
        ("PersistentConfig1", "Counted"),
        ("Result", "Counted"),
        ("order-2", "OrderPaid"),
        ("Results", "OrderPlacedLate"),
    ] {
        client.append_to_stream(stream, &Default::default(), json_event(event_type, json!({}))).await.expect("append");
    }
    let pair = |stream: &str, event_type: &str| (stream.to_owned(), event_type.to_owned());

    // As an exclusion: everything but system streams.
    let exclude = SubscriptionFilter::on_stream_name().regex(EXCLUDE_SYSTEM_STREAMS);
    assert_eq!(
        caught_up_through(&client, exclude).await,
        vec![pair("order-1", "OrderPlaced"), pair("order-2", "OrderPaid"), pair("Results", "OrderPlacedLate")]
    );
    // As an inclusion, with a positive lookahead: only the system streams.
    let include = SubscriptionFilter::on_stream_name().regex(r"^(?=(\$.+$|PersistentConfig\d+$|Result$))");
    assert_eq!(
        caught_up_through(&client, include).await,
        vec![pair("$sys-test", "Counted"), pair("PersistentConfig1", "Counted"), pair("Result", "Counted")]
    );
    // On the event type: a lookahead picks OrderPlaced, not OrderPaid or OrderPlacedLate.
    let placed = SubscriptionFilter::on_event_type().regex(r"^Order(?=Placed$)");
    assert_eq!(caught_up_through(&client, placed).await, vec![pair("order-1", "OrderPlaced")]);

    // Live events go through the same filter.
    let exclude = SubscriptionFilter::on_stream_name().regex(EXCLUDE_SYSTEM_STREAMS);
    let mut live =
        client.subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::End).filter(exclude)).await;
    assert_eq!(next_seen(&mut live).await.0, Seen::Confirmed);
    append_numbers(&client, "$sys-test", 1..2).await;
    append_numbers(&client, "order-3", 2..3).await;
    loop {
        match next_seen(&mut live).await.0 {
            Seen::Event(stream, n) => {
                assert_eq!((stream.as_str(), n), ("order-3", 2), "the system stream's event is filtered out");
                break;
            }
            Seen::CaughtUp | Seen::Checkpoint => {}
            Seen::Confirmed => panic!("confirmed twice"),
        }
    }
}

async fn last_position(client: &eventstore::Client) -> Position {
    let options = eventstore::ReadAllOptions::default().backwards().position(StreamPosition::End).max_count(1);
    let mut read = client.read_all(&options).await.expect("read");
    read.next().await.expect("read").expect("an event").get_original_event().position
}

#[tokio::test]
async fn many_subscribers_each_receive_every_event_while_a_stalled_one_waits() {
    let env = TestEnv::start().await;
    let client = env.client();
    // A subscriber that never reads: the server must neither buffer without
    // bound for it nor hold up the others. It has its own client (so its own
    // HTTP/2 connection: on a shared one, its unread data would use up the
    // connection's flow-control window, which is the client's affair).
    let stalled_client = env.client();
    let mut stalled = stalled_client.subscribe_to_all(&Default::default()).await;
    assert_eq!(next_seen(&mut stalled).await.0, Seen::Confirmed);
    // Twenty live subscribers, each confirmed and caught up before the writes.
    let mut subscribers = Vec::new();
    for _ in 0..20 {
        let mut sub = client
            .subscribe_to_stream("fanout", &SubscribeToStreamOptions::default().start_from(StreamPosition::End))
            .await;
        assert_eq!(take(&mut sub, 2).await, vec![Seen::Confirmed, Seen::CaughtUp]);
        subscribers.push(sub);
    }
    append_numbers(&client, "fanout", 0..500).await;
    let readers = subscribers.into_iter().map(|mut sub| {
        tokio::spawn(async move {
            let mut numbers = Vec::new();
            while numbers.len() < 500 {
                if let (Seen::Event(_, n), _) = next_seen(&mut sub).await {
                    numbers.push(n);
                }
            }
            numbers
        })
    });
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), (0..500).collect::<Vec<_>>());
    }
    drop(stalled);
}

/// Reads `subscription` on a thread of its own into a channel.
///
/// The client's `next_subscription_event` is not cancel-safe: it takes the
/// response stream out of the subscription while it waits, so a call dropped
/// by a timeout drops the stream, and the next call silently subscribes again
/// (a second `Confirmed`, and a rescan from the start point). Reading without
/// ever dropping a call, and timing out on the channel instead, observes the
/// server rather than that. And on a response stream that ends, the call
/// polls the finished stream forever without yielding; on its own thread
/// that cannot starve the test, which then fails on its timeout instead of
/// hanging.
fn read_on_a_thread(mut subscription: Subscription) -> mpsc::UnboundedReceiver<eventstore::Result<SubscriptionEvent>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            loop {
                let message = subscription.next_subscription_event().await;
                let failed = message.is_err();
                if tx.send(message).is_err() || failed {
                    return;
                }
            }
        });
    });
    rx
}

/// What arrives from `messages` until `deadline` (a bounded observation
/// window: the assertions are on what arrived in it).
async fn arrived_until(
    messages: &mut mpsc::UnboundedReceiver<eventstore::Result<SubscriptionEvent>>,
    deadline: Instant,
) -> Vec<SubscriptionEvent> {
    let mut arrived = Vec::new();
    while let Ok(message) = tokio::time::timeout_at(deadline, messages.recv()).await {
        arrived.push(message.expect("the reader is running").expect("the subscription stays open"));
    }
    arrived
}

fn confirmations(messages: &[SubscriptionEvent]) -> usize {
    messages.iter().filter(|m| matches!(m, SubscriptionEvent::Confirmed(_))).count()
}

fn events(messages: &[SubscriptionEvent]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SubscriptionEvent::EventAppeared(e) => Some(e.get_original_event().event_type.clone()),
            _ => None,
        })
        .collect()
}

/// Waits for `CaughtUp` on `messages`, then watches them `for_a_while`
/// more: everything that arrived.
async fn caught_up_then(
    messages: &mut mpsc::UnboundedReceiver<eventstore::Result<SubscriptionEvent>>,
    for_a_while: Duration,
) -> Vec<SubscriptionEvent> {
    let mut seen = Vec::new();
    while !seen.iter().any(|m| matches!(m, SubscriptionEvent::CaughtUp)) {
        let message = within("caught up", messages.recv()).await.expect("the reader is running");
        seen.push(message.expect("the subscription stays open"));
    }
    seen.extend(arrived_until(messages, Instant::now() + for_a_while).await);
    seen
}

/// Waits for the next event of `messages`; what came before it.
async fn until_event(
    messages: &mut mpsc::UnboundedReceiver<eventstore::Result<SubscriptionEvent>>,
) -> (Vec<SubscriptionEvent>, eventstore::ResolvedEvent) {
    let mut before = Vec::new();
    loop {
        let message = within("a subscription message", messages.recv()).await.expect("the reader is running");
        match message.expect("the subscription stays open") {
            SubscriptionEvent::EventAppeared(e) => return (before, e),
            other => before.push(other),
        }
    }
}

#[tokio::test]
async fn an_idle_event_type_prefix_subscription_to_all_stays_open() {
    // A lane's subscription: `$all` from the start, filtered on event-type
    // prefixes, with nothing (or nothing it wants) to read. Like
    // EventStoreDB's, it stays open while idle: one confirmation, however
    // long nothing happens, then the wanted event when it is written.
    let env = TestEnv::start().await;
    let client = env.client();
    let filter = SubscriptionFilter::on_event_type().add_prefix("Stock").add_prefix("Item");
    let options = SubscribeToAllOptions::default().position(StreamPosition::Start).filter(filter);
    let subscribe = || client.subscribe_to_all(&options);
    let window = Duration::from_secs(1);

    // An empty store.
    let mut on_empty = read_on_a_thread(subscribe().await);
    let seen = caught_up_then(&mut on_empty, window).await;
    assert_eq!(confirmations(&seen), 1, "one confirmation on an empty store, got {seen:?}");
    assert!(matches!(seen.as_slice(), [SubscriptionEvent::Confirmed(_), SubscriptionEvent::CaughtUp]), "{seen:?}");

    // A store with only events the filter rejects: more than a filter
    // window (32) of them, so both checkpoint paths run before going idle.
    append_numbers(&client, "noise", 0..40).await;
    let mut on_noise = read_on_a_thread(subscribe().await);
    let seen = caught_up_then(&mut on_noise, window).await;
    assert_eq!(confirmations(&seen), 1, "one confirmation over non-matching events, got {seen:?}");
    assert_eq!(events(&seen), Vec::<String>::new(), "nothing matches yet");
    // Meanwhile the first one saw the noise go by, and did not start over.
    let seen = arrived_until(&mut on_empty, Instant::now()).await;
    assert_eq!(confirmations(&seen), 0, "the idle subscription was not restarted, got {seen:?}");
    assert_eq!(events(&seen), Vec::<String>::new(), "nothing matches yet");

    // A matching event written afterwards arrives on both, on the same subscriptions.
    client
        .append_to_stream("stock-1", &Default::default(), json_event("StockReceived", json!({"n": 1})))
        .await
        .expect("append");
    for messages in [&mut on_empty, &mut on_noise] {
        let (before, event) = until_event(messages).await;
        assert_eq!(confirmations(&before), 0, "no resubscription before the event, got {before:?}");
        assert_eq!(event.get_original_event().event_type, "StockReceived");
        assert_eq!(event.get_original_event().stream_id, "stock-1");
    }
}
