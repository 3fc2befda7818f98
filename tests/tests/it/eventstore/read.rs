//! Reads: one stream and `$all`, both directions, every start point, counts,
//! the stream positions that close a stream read, and the errors for missing,
//! soft-deleted and tombstoned streams, where EventStoreDB reports them;
//! stream metadata, and the events `$tb`, `$maxCount` and `$maxAge` hide from
//! stream reads and catch-up subscriptions (but not from `$all`).

use std::time::{Duration, SystemTime};

use eventstore::{
    DeleteStreamOptions, Error, ExpectedRevision, Position, ReadAllOptions, ReadEvent, ReadStream, ReadStreamOptions,
    StreamPosition, SubscribeToStreamOptions, SubscriptionEvent, TombstoneStreamOptions,
};
use projector_tests::{collect, json_event, within, TestEnv};
use serde_json::json;

fn numbers(events: &[eventstore::ResolvedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            serde_json::from_slice::<serde_json::Value>(&e.get_original_event().data).expect("json")["n"]
                .as_u64()
                .expect("n")
        })
        .collect()
}

async fn seed(client: &eventstore::Client, stream: &str, range: std::ops::Range<u64>) {
    let events = range.map(|n| json_event("Counted", json!({"n": n}))).collect::<Vec<_>>();
    client.append_to_stream(stream, &Default::default(), events).await.expect("seed");
}

#[tokio::test]
async fn a_stream_reads_in_both_directions_from_every_start_point() {
    let env = TestEnv::start().await;
    let client = env.client();
    seed(&client, "counter", 0..1000).await;
    let read = |options: ReadStreamOptions| {
        let client = client.clone();
        async move { numbers(&collect(client.read_stream("counter", &options).await.expect("read")).await.expect("events")) }
    };
    let base = ReadStreamOptions::default();

    assert_eq!(read(base.clone().max_count(usize::MAX)).await, (0..1000).collect::<Vec<_>>(), "all, paged internally");
    assert_eq!(read(base.clone().position(StreamPosition::Position(10)).max_count(3)).await, vec![10, 11, 12]);
    // The client sets the direction from Start/End, so the direction comes last.
    assert_eq!(read(base.clone().position(StreamPosition::End).forwards().max_count(3)).await, Vec::<u64>::new());
    assert_eq!(read(base.clone().position(StreamPosition::End).backwards().max_count(3)).await, vec![999, 998, 997]);
    assert_eq!(read(base.clone().position(StreamPosition::Position(2)).backwards().max_count(10)).await, vec![2, 1, 0]);
    assert_eq!(read(base.clone().position(StreamPosition::Start).backwards().max_count(10)).await, vec![0]);
    assert_eq!(read(base.clone().position(StreamPosition::Position(5000)).max_count(10)).await, Vec::<u64>::new());
}

/// Every message of a read, as the client surfaces it.
#[derive(Debug, PartialEq)]
enum Read {
    Event(u64),
    FirstStreamPosition(u64),
    LastStreamPosition(u64),
    LastAllStreamPosition,
}

async fn read_messages(mut read: ReadStream) -> eventstore::Result<Vec<Read>> {
    let mut messages = Vec::new();
    while let Some(message) = read.next_read_event().await? {
        messages.push(match message {
            ReadEvent::Event(e) => Read::Event(e.get_original_event().revision),
            ReadEvent::FirstStreamPosition(r) => Read::FirstStreamPosition(r),
            ReadEvent::LastStreamPosition(r) => Read::LastStreamPosition(r),
            ReadEvent::LastAllStreamPosition(_) => Read::LastAllStreamPosition,
        });
    }
    Ok(messages)
}

#[tokio::test]
async fn a_stream_read_closes_with_the_revision_of_the_stream_last_event() {
    let env = TestEnv::start().await;
    let client = env.client();
    seed(&client, "counter", 0..300).await;
    let read = |options: ReadStreamOptions| {
        let client = client.clone();
        async move { read_messages(client.read_stream("counter", &options).await.expect("read")).await.expect("messages") }
    };
    let base = ReadStreamOptions::default();
    let events = |revisions: std::ops::Range<u64>| revisions.map(Read::Event);

    // To the end, over more than one of the server's pages.
    let to_the_end = events(0..300).chain([Read::LastStreamPosition(299)]).collect::<Vec<_>>();
    assert_eq!(read(base.clone().max_count(usize::MAX)).await, to_the_end);
    // EventStoreDB sends it whenever the read finds the stream, also when
    // the count stops the read early, and backwards.
    let partial = events(10..13).chain([Read::LastStreamPosition(299)]).collect::<Vec<_>>();
    assert_eq!(read(base.clone().position(StreamPosition::Position(10)).max_count(3)).await, partial);
    let backwards = vec![Read::Event(299), Read::Event(298), Read::LastStreamPosition(299)];
    assert_eq!(read(base.clone().position(StreamPosition::End).max_count(2)).await, backwards);
    // Forwards from past the end, it first says where the next event will be.
    assert_eq!(read(base.clone().position(StreamPosition::Position(300))).await, vec![Read::LastStreamPosition(299)]);
    assert_eq!(
        read(base.clone().position(StreamPosition::Position(5000))).await,
        vec![Read::FirstStreamPosition(300), Read::LastStreamPosition(299)]
    );

    // A missing stream: the call succeeds and its first message is the error.
    let mut missing = client.read_stream("nobody", &base).await.expect("the call itself succeeds");
    assert!(matches!(missing.next_read_event().await, Err(Error::ResourceNotFound)));
    // `$all` has no closing position.
    let all = read_messages(client.read_all(&ReadAllOptions::default()).await.expect("read")).await.expect("all");
    assert_eq!(all, events(0..300).collect::<Vec<_>>());
}

#[tokio::test]
async fn all_reads_in_both_directions_from_positions() {
    let env = TestEnv::start().await;
    let client = env.client();
    seed(&client, "a", 0..3).await;
    seed(&client, "b", 3..6).await;

    let forwards =
        collect(client.read_all(&ReadAllOptions::default().max_count(100)).await.expect("read")).await.expect("all");
    assert_eq!(numbers(&forwards), vec![0, 1, 2, 3, 4, 5]);
    let positions: Vec<Position> = forwards.iter().map(|e| e.get_original_event().position).collect();
    assert!(positions.windows(2).all(|w| w[0].commit < w[1].commit), "positions increase: {positions:?}");
    assert!(positions.iter().all(|p| p.commit == p.prepare));

    let backwards = collect(
        client
            .read_all(&ReadAllOptions::default().backwards().position(StreamPosition::End).max_count(4))
            .await
            .expect("read"),
    )
    .await
    .expect("all");
    assert_eq!(numbers(&backwards), vec![5, 4, 3, 2]);

    // Forwards from a position includes the event there; backwards stops before it.
    let from = ReadAllOptions::default().position(StreamPosition::Position(positions[3])).max_count(2);
    assert_eq!(numbers(&collect(client.read_all(&from).await.expect("read")).await.expect("all")), vec![3, 4]);
    let before = ReadAllOptions::default().backwards().position(StreamPosition::Position(positions[3])).max_count(10);
    assert_eq!(numbers(&collect(client.read_all(&before).await.expect("read")).await.expect("all")), vec![2, 1, 0]);
}

#[tokio::test]
async fn a_missing_stream_is_not_found() {
    let env = TestEnv::start().await;
    let client = env.client();
    // As from EventStoreDB, a `stream_not_found` message: the call succeeds.
    let read = client.read_stream("nobody", &Default::default()).await.expect("the call succeeds");
    let err = read_messages(read).await.unwrap_err();
    assert!(matches!(err, Error::ResourceNotFound), "{err:?}");
}

#[tokio::test]
async fn a_soft_deleted_stream_is_not_found_and_can_be_recreated() {
    let env = TestEnv::start().await;
    let client = env.client();
    seed(&client, "cart-1", 0..3).await;
    let deleted = client
        .delete_stream("cart-1", &DeleteStreamOptions::default().expected_revision(ExpectedRevision::Exact(2)))
        .await
        .expect("delete");
    assert!(deleted.is_some(), "delete reports its position");

    // Like a missing stream: the call succeeds, its first message is the error.
    let read = client.read_stream("cart-1", &Default::default()).await.expect("the call succeeds");
    let err = read_messages(read).await.unwrap_err();
    assert!(matches!(err, Error::ResourceNotFound), "{err:?}");

    // Appending again recreates it; revisions continue and old events stay hidden.
    let written = client
        .append_to_stream("cart-1", &Default::default(), json_event("Counted", json!({"n": 3})))
        .await
        .expect("recreate");
    assert_eq!(written.next_expected_version, 3);
    let events = collect(client.read_stream("cart-1", &Default::default()).await.expect("read")).await.expect("events");
    assert_eq!(numbers(&events), vec![3]);
    assert_eq!(events[0].get_original_event().revision, 3);

    // Deleting with a stale expected revision is refused and changes nothing.
    let err = client
        .delete_stream("cart-1", &DeleteStreamOptions::default().expected_revision(ExpectedRevision::Exact(0)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Grpc { code: tonic::Code::FailedPrecondition, .. }), "{err:?}");
    assert_eq!(
        collect(client.read_stream("cart-1", &Default::default()).await.expect("read")).await.expect("events").len(),
        1
    );
}

#[tokio::test]
async fn a_tombstoned_stream_is_deleted_for_reads_writes_and_deletes() {
    let env = TestEnv::start().await;
    let client = env.client();
    seed(&client, "gone", 0..2).await;
    client.tombstone_stream("gone", &TombstoneStreamOptions::default()).await.expect("tombstone");

    // EventStoreDB answers the call itself with the error, before any
    // message, so the client's `read_stream(...).await` is what fails.
    let err = client.read_stream("gone", &Default::default()).await.unwrap_err();
    assert!(matches!(err, Error::ResourceDeleted), "read: {err:?}");
    let backwards = ReadStreamOptions::default().position(StreamPosition::End);
    let err = client.read_stream("gone", &backwards).await.unwrap_err();
    assert!(matches!(err, Error::ResourceDeleted), "read backwards: {err:?}");
    let err =
        client.append_to_stream("gone", &Default::default(), json_event("Counted", json!({"n": 9}))).await.unwrap_err();
    assert!(matches!(err, Error::ResourceDeleted), "append: {err:?}");
    let err = client.delete_stream("gone", &Default::default()).await.unwrap_err();
    assert!(matches!(err, Error::ResourceDeleted), "delete: {err:?}");
    let err = client.tombstone_stream("gone", &Default::default()).await.unwrap_err();
    assert!(matches!(err, Error::ResourceDeleted), "tombstone: {err:?}");
    let metadata = client.get_stream_metadata("gone", &Default::default()).await;
    assert!(metadata.is_ok(), "the metadata stream is separate: {metadata:?}");

    // The tombstone shows in $all as EventStoreDB writes it.
    let last = collect(
        client
            .read_all(&ReadAllOptions::default().backwards().position(StreamPosition::End).max_count(1))
            .await
            .expect("read"),
    )
    .await
    .expect("all");
    let tombstone = last[0].get_original_event();
    assert_eq!(
        (tombstone.stream_id.as_str(), tombstone.event_type.as_str(), tombstone.revision),
        ("gone", "$streamDeleted", i64::MAX as u64)
    );
}

#[tokio::test]
async fn stream_metadata_round_trips_and_truncate_before_hides_events() {
    let env = TestEnv::start().await;
    let client = env.client();
    seed(&client, "trimmed", 0..5).await;
    let metadata = eventstore::StreamMetadata::builder().truncate_before(3).max_count(100).build();
    client.set_stream_metadata("trimmed", &Default::default(), &metadata).await.expect("set metadata");
    let events =
        collect(client.read_stream("trimmed", &Default::default()).await.expect("read")).await.expect("events");
    assert_eq!(numbers(&events), vec![3, 4]);
    match client.get_stream_metadata("trimmed", &Default::default()).await.expect("get metadata") {
        eventstore::StreamMetadataResult::Success(read) => {
            assert_eq!(read.metadata().truncate_before, Some(3));
            assert_eq!(read.metadata().max_count, Some(100));
        }
        other => panic!("expected metadata, got {other:?}"),
    }
}

/// What a catch-up subscription to `stream` from its start delivers up to
/// and including `CaughtUp`: the `n` of each event, `None` for `CaughtUp`.
async fn catch_up(client: &eventstore::Client, stream: &str) -> Vec<Option<u64>> {
    let options = SubscribeToStreamOptions::default().start_from(StreamPosition::Start);
    let mut subscription = client.subscribe_to_stream(stream, &options).await;
    let mut seen = Vec::new();
    loop {
        match within("a subscription message", subscription.next_subscription_event()).await.expect("subscription") {
            SubscriptionEvent::Confirmed(_) => {}
            SubscriptionEvent::EventAppeared(e) => seen.extend(numbers(&[e]).into_iter().map(Some)),
            SubscriptionEvent::CaughtUp => {
                seen.push(None);
                return seen;
            }
            other => panic!("unexpected subscription message {other:?}"),
        }
    }
}

#[tokio::test]
async fn max_count_hides_the_oldest_events_from_reads_and_catch_up_subscriptions() {
    let env = TestEnv::start().await;
    let client = env.client();
    seed(&client, "capped", 0..10).await;
    let metadata = eventstore::StreamMetadata::builder().max_count(3).build();
    client.set_stream_metadata("capped", &Default::default(), &metadata).await.expect("set metadata");
    let read = |options: ReadStreamOptions| {
        let client = client.clone();
        async move { numbers(&collect(client.read_stream("capped", &options).await.expect("read")).await.expect("events")) }
    };
    let base = ReadStreamOptions::default();

    assert_eq!(read(base.clone()).await, vec![7, 8, 9]);
    assert_eq!(read(base.clone().position(StreamPosition::Position(2)).max_count(2)).await, vec![7, 8]);
    assert_eq!(read(base.clone().position(StreamPosition::End).backwards().max_count(10)).await, vec![9, 8, 7]);
    assert_eq!(read(base.clone().position(StreamPosition::Position(6)).backwards()).await, Vec::<u64>::new());
    // The read still closes with the stream's last revision.
    let messages = read_messages(client.read_stream("capped", &base).await.expect("read")).await.expect("messages");
    assert_eq!(messages, vec![Read::Event(7), Read::Event(8), Read::Event(9), Read::LastStreamPosition(9)]);
    assert_eq!(catch_up(&client, "capped").await, vec![Some(7), Some(8), Some(9), None]);

    // A new event pushes the oldest one out.
    seed(&client, "capped", 10..11).await;
    assert_eq!(read(base.clone()).await, vec![8, 9, 10]);
    // `$all` keeps them all: EventStoreDB only removes them from it when it scavenges.
    let all =
        collect(client.read_all(&ReadAllOptions::default().max_count(100)).await.expect("read")).await.expect("all");
    let capped = all.into_iter().filter(|e| e.get_original_event().stream_id == "capped").collect::<Vec<_>>();
    assert_eq!(numbers(&capped), (0..11).collect::<Vec<_>>());
    // The latest metadata document replaces the previous one whole.
    client.set_stream_metadata("capped", &Default::default(), &Default::default()).await.expect("clear metadata");
    assert_eq!(read(base.clone()).await, (0..11).collect::<Vec<_>>());
}

#[tokio::test]
async fn max_age_hides_events_once_they_are_older_than_it() {
    let env = TestEnv::start().await;
    let client = env.client();
    seed(&client, "aging", 0..3).await;
    // The server stamps `created` before it answers, so the events are at
    // most this old.
    let appended = SystemTime::now();
    // EventStoreDB reads `$maxAge` in seconds, but the Rust client (4.0)
    // writes `StreamMetadataBuilder::max_age` in milliseconds, so the
    // documents are written as JSON here.
    let set_max_age = |seconds: u64| {
        let client = client.clone();
        async move {
            let metadata = json_event("$metadata", json!({ "$maxAge": seconds }));
            client.append_to_stream("$$aging", &Default::default(), metadata).await.expect("set metadata");
        }
    };
    let read = |options: ReadStreamOptions| {
        let client = client.clone();
        async move { read_messages(client.read_stream("aging", &options).await.expect("read")).await.expect("messages") }
    };
    let forwards = ReadStreamOptions::default();
    let backwards = ReadStreamOptions::default().position(StreamPosition::End).backwards();

    set_max_age(3600).await;
    let events = |revisions: std::ops::Range<u64>| revisions.map(Read::Event);
    assert_eq!(read(forwards.clone()).await, events(0..3).chain([Read::LastStreamPosition(2)]).collect::<Vec<_>>());

    // Not a sleep to let something happen: `$maxAge` is about the wall
    // clock, so the test waits until the events are certainly over a second old.
    set_max_age(1).await;
    let deadline = appended + Duration::from_secs(1) + Duration::from_millis(1);
    while let Ok(left) = deadline.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    // The stream exists, so it is found, with nothing to read.
    assert_eq!(read(forwards.clone()).await, vec![Read::LastStreamPosition(2)]);
    assert_eq!(read(backwards.clone()).await, vec![Read::LastStreamPosition(2)]);
    assert_eq!(catch_up(&client, "aging").await, vec![None]);
    // `$all` still has them.
    let all =
        collect(client.read_all(&ReadAllOptions::default().max_count(100)).await.expect("read")).await.expect("all");
    assert_eq!(all.iter().filter(|e| e.get_original_event().stream_id == "aging").count(), 3);
}
