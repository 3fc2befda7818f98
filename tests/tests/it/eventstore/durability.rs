//! Durability: acknowledged events survive a restart at identical positions;
//! a torn or corrupt tail is cut back to the last complete record and never served.

use std::fs::OpenOptions;
use std::io::Write;

use eventstore::{ReadAllOptions, StreamPosition};
use projector_tests::{collect, env_number, json_event, Seeded, TestEnv};
use serde_json::json;

async fn all_events(client: &eventstore::Client) -> Vec<(String, u64, u64, String)> {
    let read = client.read_all(&ReadAllOptions::default().max_count(usize::MAX)).await.expect("read");
    collect(read)
        .await
        .expect("events")
        .iter()
        .map(|e| {
            let e = e.get_original_event();
            (e.stream_id.clone(), e.revision, e.position.commit, String::from_utf8_lossy(&e.data).into_owned())
        })
        .collect()
}

async fn seed(client: &eventstore::Client) {
    for stream in 0..10 {
        let events = (0..20).map(|n| json_event("Counted", json!({"stream": stream, "n": n}))).collect::<Vec<_>>();
        client.append_to_stream(format!("s-{stream}"), &Default::default(), events).await.expect("append");
    }
}

#[tokio::test]
async fn acknowledged_events_survive_a_restart_at_the_same_positions() {
    let mut env = TestEnv::start().await;
    seed(&env.client()).await;
    let before = all_events(&env.client()).await;
    assert_eq!(before.len(), 200);

    env.restart().await;
    let client = env.client();
    assert_eq!(all_events(&client).await, before);
    // The recovered index enforces expected revisions and continues positions.
    let written = client
        .append_to_stream(
            "s-3",
            &eventstore::AppendToStreamOptions::default().expected_revision(eventstore::ExpectedRevision::Exact(19)),
            json_event("Counted", json!({})),
        )
        .await
        .expect("append after restart");
    assert_eq!(written.next_expected_version, 20);
    assert!(written.position.commit > before.last().expect("events").2);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_to_the_last_complete_record() {
    let mut env = TestEnv::start().await;
    seed(&env.client()).await;
    let before = all_events(&env.client()).await;
    env.stop().await;

    // A crash in the middle of writing a record: half a record at the end.
    let complete_len = std::fs::metadata(env.log_path()).expect("log").len();
    let mut record = Vec::new();
    record.extend_from_slice(&200u32.to_le_bytes());
    record.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    record.extend_from_slice(&[1u8; 50]);
    OpenOptions::new().append(true).open(env.log_path()).expect("open").write_all(&record).expect("write");

    env.restart().await;
    let tail = env.server().store().recovered_tail().cloned().expect("a truncated tail is reported");
    assert_eq!(tail.at, complete_len);
    assert_eq!(tail.dropped_bytes, record.len() as u64);
    assert_eq!(std::fs::metadata(env.log_path()).expect("log").len(), complete_len);
    assert_eq!(all_events(&env.client()).await, before);

    // New appends go where the torn record was.
    let written = env
        .client()
        .append_to_stream("s-0", &Default::default(), json_event("Counted", json!({})))
        .await
        .expect("append");
    assert_eq!(written.position.commit, complete_len);
}

#[tokio::test]
async fn a_corrupt_last_record_is_dropped_and_never_served() {
    let mut env = TestEnv::start().await;
    let client = env.client();
    seed(&client).await;
    let last = client
        .append_to_stream("victim", &Default::default(), json_event("Counted", json!({"n": "last"})))
        .await
        .expect("append");
    let before: Vec<_> = all_events(&client).await.into_iter().filter(|e| e.0 != "victim").collect();
    env.stop().await;

    // Flip one byte inside the last record's payload.
    let mut bytes = std::fs::read(env.log_path()).expect("read log");
    let inside = bytes.len() - 3;
    bytes[inside] ^= 0xff;
    std::fs::write(env.log_path(), &bytes).expect("write log");

    env.restart().await;
    let tail = env.server().store().recovered_tail().cloned().expect("truncation reported");
    assert_eq!(tail.at, last.position.commit);
    assert_eq!(tail.reason, "checksum mismatch");
    assert_eq!(all_events(&env.client()).await, before);
    let err = env.client().read_stream("victim", &Default::default()).await.expect("read").next().await.unwrap_err();
    assert!(matches!(err, eventstore::Error::ResourceNotFound), "{err:?}");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_is_refused() {
    let env = TestEnv::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = eventstore_embedded::Config::new(env.log_path().parent().expect("data dir"));
    let err = eventstore_embedded::EmbeddedServer::start(listener, config).await.unwrap_err();
    assert!(err.to_string().contains("locked by another process"), "{err}");
    // The first server is unaffected.
    let read = env.client().read_all(&ReadAllOptions::default().position(StreamPosition::Start).max_count(1)).await;
    assert!(read.is_ok());
}

/// Damage done to the log's tail between two runs of the server.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The file ends at this offset (a crash in the middle of a write).
    TruncateAt(u64),
    /// The byte at this offset is flipped (a bad sector, a stray write).
    Flip(u64),
}

#[tokio::test]
async fn randomly_damaged_tails_recover_to_the_last_complete_record_every_time() {
    let rounds = env_number("PROJECTOR_TAIL_DAMAGE_ROUNDS", 40);
    let mut random = Seeded::from_env("PROJECTOR_TAIL_DAMAGE_SEED");
    eprintln!("{rounds} damaged tails, PROJECTOR_TAIL_DAMAGE_SEED={}", random.seed());

    let mut env = TestEnv::start().await;
    let client = env.client();
    // One event per append, so record i spans starts[i]..starts[i + 1].
    let mut starts = Vec::new();
    for n in 0..120u64 {
        let payload = json!({"n": n, "padding": "x".repeat((n % 7 * 40) as usize)});
        let event = json_event("Counted", payload);
        let written = client.append_to_stream(format!("s-{}", n % 6), &Default::default(), event).await;
        starts.push(written.expect("append").position.commit);
    }
    let acknowledged = all_events(&client).await;
    env.stop().await;
    let pristine = std::fs::read(env.log_path()).expect("read log");
    starts.push(pristine.len() as u64);
    // Damage only the last 40 records: the tail a crash can leave behind.
    let tail_start = starts[starts.len() - 41];

    for round in 0..rounds {
        let offset = tail_start + random.below(pristine.len() as u64 - tail_start);
        let damage = if random.below(2) == 0 { Damage::TruncateAt(offset) } else { Damage::Flip(offset) };
        let mut bytes = pristine.clone();
        match damage {
            Damage::TruncateAt(at) => bytes.truncate(at as usize),
            Damage::Flip(at) => bytes[at as usize] ^= 0xff,
        }
        std::fs::write(env.log_path(), &bytes).expect("write the damaged log");
        // Complete records before the damage survive; the damaged one and any after it go.
        let (Damage::TruncateAt(at) | Damage::Flip(at)) = damage;
        let survivors = starts[1..].iter().take_while(|end| **end <= at).count();

        env.restart().await;
        let client = env.client();
        let served = all_events(&client).await;
        assert_eq!(served, acknowledged[..survivors], "round {round}: {damage:?}");
        let cut = starts[survivors];
        // A file cut exactly at a record boundary has nothing to drop.
        let bytes_after_cut = match damage {
            Damage::TruncateAt(at) => at > cut,
            Damage::Flip(_) => true,
        };
        let reported = env.server().store().recovered_tail().map(|tail| tail.at);
        assert_eq!(reported, bytes_after_cut.then_some(cut), "round {round}: {damage:?}");
        // The next append lands where the damage began, and the server works on.
        let written = client
            .append_to_stream("after", &Default::default(), json_event("Counted", json!({"round": round})))
            .await
            .expect("append after recovery");
        assert_eq!(written.position.commit, cut, "round {round}: {damage:?}");
        env.stop().await;
    }
}
