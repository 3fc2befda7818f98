//! Appends: every expected-revision mode, typed conflicts, idempotent retries,
//! the size limit, and concurrent appenders racing for one revision.

use eventstore::{
    AppendToStreamOptions, CurrentRevision, Error, EventData, ExpectedRevision, ReadStreamOptions, StreamPosition,
};
use projector_tests::{collect, json_event, TestEnv};
use serde_json::json;
use uuid::Uuid;

fn expect(revision: ExpectedRevision) -> AppendToStreamOptions {
    AppendToStreamOptions::default().expected_revision(revision)
}

#[tokio::test]
async fn appended_events_read_back_with_every_field() {
    let env = TestEnv::start().await;
    let client = env.client();
    let id = Uuid::new_v4();
    let event = json_event("UserRegistered", json!({"email": "ada@example.com"}))
        .id(id)
        .metadata_as_json(&json!({"schemaVersion": 2}))
        .expect("metadata");
    let written = client.append_to_stream("user-1", &expect(ExpectedRevision::NoStream), event).await.expect("append");
    assert_eq!(written.next_expected_version, 0);

    let events = collect(client.read_stream("user-1", &ReadStreamOptions::default()).await.expect("read"))
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    let recorded = events[0].get_original_event();
    assert_eq!(recorded.id, id);
    assert_eq!(recorded.stream_id, "user-1");
    assert_eq!(recorded.revision, 0);
    assert_eq!(recorded.event_type, "UserRegistered");
    assert!(recorded.is_json);
    assert_eq!(recorded.position, written.position);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&recorded.data).expect("json"),
        json!({"email": "ada@example.com"})
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&recorded.custom_metadata).expect("json"),
        json!({"schemaVersion": 2})
    );
    let age = chrono_age_secs(recorded.created.timestamp());
    assert!(age < 600, "created time should be now, was {age}s ago");
}

fn chrono_age_secs(unix: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    now - unix
}

#[tokio::test]
async fn each_expected_revision_mode_is_enforced() {
    let env = TestEnv::start().await;
    let client = env.client();
    let ev = || json_event("Happened", json!({}));

    // stream_exists on a missing stream
    let err = client.append_to_stream("s", &expect(ExpectedRevision::StreamExists), ev()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                current: CurrentRevision::NoStream,
                expected: ExpectedRevision::StreamExists
            }
        ),
        "{err:?}"
    );
    // exact on a missing stream
    let err = client.append_to_stream("s", &expect(ExpectedRevision::Exact(0)), ev()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion { current: CurrentRevision::NoStream, expected: ExpectedRevision::Exact(0) }
        ),
        "{err:?}"
    );

    client
        .append_to_stream("s", &expect(ExpectedRevision::NoStream), vec![ev(), ev()])
        .await
        .expect("no_stream on new stream");
    let err = client.append_to_stream("s", &expect(ExpectedRevision::NoStream), ev()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion { current: CurrentRevision::Current(1), expected: ExpectedRevision::NoStream }
        ),
        "{err:?}"
    );
    let err = client.append_to_stream("s", &expect(ExpectedRevision::Exact(0)), ev()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion { current: CurrentRevision::Current(1), expected: ExpectedRevision::Exact(0) }
        ),
        "{err:?}"
    );

    let w = client.append_to_stream("s", &expect(ExpectedRevision::Exact(1)), ev()).await.expect("exact");
    assert_eq!(w.next_expected_version, 2);
    let w = client.append_to_stream("s", &expect(ExpectedRevision::StreamExists), ev()).await.expect("stream_exists");
    assert_eq!(w.next_expected_version, 3);
    let w = client.append_to_stream("s", &expect(ExpectedRevision::Any), ev()).await.expect("any");
    assert_eq!(w.next_expected_version, 4);

    let events =
        collect(client.read_stream("s", &ReadStreamOptions::default()).await.expect("read")).await.expect("events");
    assert_eq!(events.len(), 5, "refused appends must write nothing");
}

#[tokio::test]
async fn retrying_an_append_with_the_same_event_ids_writes_nothing_new() {
    let env = TestEnv::start().await;
    let client = env.client();
    let ids = [Uuid::new_v4(), Uuid::new_v4()];
    let batch = || {
        ids.iter().map(|id| json_event("Happened", json!({"id": id.to_string()})).id(*id)).collect::<Vec<EventData>>()
    };

    let first = client.append_to_stream("orders-1", &expect(ExpectedRevision::NoStream), batch()).await.expect("first");
    // Same ids, same expected revision: a retry, answered with the original result.
    let retry = client.append_to_stream("orders-1", &expect(ExpectedRevision::NoStream), batch()).await.expect("retry");
    assert_eq!(retry.next_expected_version, first.next_expected_version);
    assert_eq!(retry.position, first.position);
    // With `any` too.
    let retry_any =
        client.append_to_stream("orders-1", &expect(ExpectedRevision::Any), batch()).await.expect("retry any");
    assert_eq!(retry_any.position, first.position);

    let events = collect(client.read_stream("orders-1", &ReadStreamOptions::default()).await.expect("read"))
        .await
        .expect("events");
    assert_eq!(events.iter().map(|e| e.get_original_event().id).collect::<Vec<_>>(), ids.to_vec());

    // The same ids sent through the batch-append RPC are idempotent as well.
    let batch_client = client.batch_append(&Default::default()).await.expect("batch client");
    let again =
        batch_client.append_to_stream("orders-1", ExpectedRevision::NoStream, batch()).await.expect("batch retry");
    assert_eq!(again.current_revision(), Some(1));
    let events = collect(client.read_stream("orders-1", &ReadStreamOptions::default()).await.expect("read"))
        .await
        .expect("events");
    assert_eq!(events.len(), 2);
}

#[tokio::test]
async fn a_retry_that_only_partly_matches_what_was_written_is_a_conflict() {
    let env = TestEnv::start().await;
    let client = env.client();
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let event = |id: Uuid| json_event("Happened", json!({})).id(id);
    client
        .append_to_stream("partial", &expect(ExpectedRevision::NoStream), vec![event(a), event(b)])
        .await
        .expect("first");
    let err = client
        .append_to_stream("partial", &expect(ExpectedRevision::NoStream), vec![event(a), event(c)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { current: CurrentRevision::Current(1), .. }), "{err:?}");
    let events = collect(client.read_stream("partial", &ReadStreamOptions::default()).await.expect("read"))
        .await
        .expect("events");
    assert_eq!(events.iter().map(|e| e.get_original_event().id).collect::<Vec<_>>(), vec![a, b]);
}

#[tokio::test]
async fn an_append_over_the_size_limit_is_refused_whole() {
    let env = TestEnv::start_with(|c| c.max_append_size = 64 * 1024).await;
    let client = env.client();
    let big = EventData::binary("Blob", vec![7u8; 40 * 1024].into());
    let err = client.append_to_stream("blobs", &Default::default(), vec![big.clone(), big.clone()]).await.unwrap_err();
    match &err {
        Error::Grpc { code, message } => {
            assert_eq!(*code, tonic::Code::InvalidArgument);
            assert!(message.contains("Maximum Append Size of 65536 Exceeded"), "{message}");
        }
        other => panic!("expected the size error, got {other:?}"),
    }
    let err = client.read_stream("blobs", &ReadStreamOptions::default()).await.expect("read").next().await.unwrap_err();
    assert!(matches!(err, Error::ResourceNotFound), "nothing may be written: {err:?}");

    // Through batch append: the typed error, and still nothing written.
    let batch_client = client.batch_append(&Default::default()).await.expect("batch client");
    let err = batch_client.append_to_stream("blobs", ExpectedRevision::Any, vec![big.clone(), big]).await.unwrap_err();
    assert!(format!("{err}").contains("maximum append size"), "{err}");

    // Under the limit it goes through.
    let small = EventData::binary("Blob", vec![1u8; 1024].into());
    client.append_to_stream("blobs", &Default::default(), small).await.expect("small append");
}

#[tokio::test]
async fn concurrent_appenders_expecting_the_same_revision_have_exactly_one_winner() {
    let env = TestEnv::start().await;
    let client = env.client();
    client
        .append_to_stream("race", &expect(ExpectedRevision::NoStream), json_event("Opened", json!({})))
        .await
        .expect("seed");

    let mut tasks = Vec::new();
    for writer in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .append_to_stream(
                    "race",
                    &expect(ExpectedRevision::Exact(0)),
                    json_event("Claimed", json!({"writer": writer})),
                )
                .await
        }));
    }
    let mut wins = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(w) => {
                assert_eq!(w.next_expected_version, 1);
                wins += 1;
            }
            Err(Error::WrongExpectedVersion {
                current: CurrentRevision::Current(1),
                expected: ExpectedRevision::Exact(0),
            }) => conflicts += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 19));
    let events = collect(
        client.read_stream("race", &ReadStreamOptions::default().position(StreamPosition::Start)).await.expect("read"),
    )
    .await
    .expect("events");
    assert_eq!(events.len(), 2);
}

#[tokio::test]
async fn system_streams_are_ordinary_streams() {
    let env = TestEnv::start().await;
    let client = env.client();
    client
        .append_to_stream("$settings-x", &Default::default(), json_event("$config", json!({"a": 1})))
        .await
        .expect("append");
    let events =
        collect(client.read_stream("$settings-x", &Default::default()).await.expect("read")).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].get_original_event().event_type, "$config");
}
