//! The event store as a process of its own (`projector eventstore`), killed
//! with SIGKILL while several clients append at once, and given a full disk.
//!
//! What must hold after every restart: each acknowledged append is there,
//! whole, at the stream revisions and the position it was acknowledged with;
//! each event a subscriber was sent before the kill is there at the same
//! position; an append that was in flight at the kill is there entirely or
//! not at all; every event's bytes are the ones sent; nothing else is there.
//!
//! The default suite kills 3 times; `PROJECTOR_STORE_KILLS` sets how many,
//! `PROJECTOR_STORE_KILL_SEED` replays the batch sizes and kill points of a run.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use eventstore::{
    AppendToStreamOptions, EventData, ExpectedRevision, ReadAllOptions, StreamPosition, SubscribeToAllOptions,
};
use projector_tests::{collect, env_number, within, LoggedProcess, Seeded};
use serde_json::json;
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_projector-host");
const WRITERS: u64 = 4;

pub(super) async fn start_store(data: &Path) -> (LoggedProcess, eventstore::Client) {
    let mut command = Command::new(BINARY);
    command
        .args(["eventstore", "--insecure", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(data)
        .env_remove("RUST_LOG");
    let store = tokio::task::spawn_blocking(move || LoggedProcess::start(command, "event store listening"))
        .await
        .expect("store");
    // Few, quick discovery attempts: a client of a killed store gives up soon.
    let settings = format!("esdb://{}?tls=false&maxDiscoverAttempts=3&discoveryInterval=50", store.addr);
    let settings = settings.parse().expect("settings");
    (store, eventstore::Client::new(settings).expect("client"))
}

/// An append and what became of it.
#[derive(Debug, Clone)]
struct Append {
    stream: String,
    ids: Vec<Uuid>,
    /// `Some((last revision, position))` once acknowledged.
    acknowledged: Option<(u64, u64)>,
}

/// Everything the test sent and was told, across the store's lives.
#[derive(Debug, Default, Clone)]
struct Ledger {
    appends: Vec<Append>,
    /// The bytes of every event sent.
    sent: HashMap<Uuid, Bytes>,
    /// The position a subscriber was given each event at.
    served: HashMap<Uuid, u64>,
}

fn snapshot(ledger: &Mutex<Ledger>) -> Ledger {
    ledger.lock().expect("ledger").clone()
}

/// An event of about `size` bytes.
fn event(writer: u64, n: u64, size: usize) -> (Uuid, EventData, Bytes) {
    let id = Uuid::new_v4();
    let payload = json!({"writer": writer, "n": n, "padding": "p".repeat(size)});
    let bytes = Bytes::from(serde_json::to_vec(&payload).expect("json"));
    (id, EventData::json("Appended", &payload).expect("event").id(id), bytes)
}

/// Appends batches of random sizes to its own stream, each at the exact
/// revision it expects, until an append fails (the store was killed).
async fn writer(client: eventstore::Client, name: String, writer: u64, mut random: Seeded, ledger: Arc<Mutex<Ledger>>) {
    let mut expected = ExpectedRevision::NoStream;
    for n in 0.. {
        let events: Vec<(Uuid, EventData, Bytes)> =
            (0..1 + random.below(20)).map(|i| event(writer, n * 100 + i, 50 + random.below(2000) as usize)).collect();
        let index = {
            let mut ledger = ledger.lock().expect("ledger");
            ledger.sent.extend(events.iter().map(|(id, _, bytes)| (*id, bytes.clone())));
            let ids = events.iter().map(|(id, _, _)| *id).collect();
            ledger.appends.push(Append { stream: name.clone(), ids, acknowledged: None });
            ledger.appends.len() - 1
        };
        let options = AppendToStreamOptions::default().expected_revision(expected);
        let data: Vec<EventData> = events.into_iter().map(|(_, data, _)| data).collect();
        match client.append_to_stream(name.as_str(), &options, data).await {
            Ok(written) => {
                let mut ledger = ledger.lock().expect("ledger");
                ledger.appends[index].acknowledged = Some((written.next_expected_version, written.position.commit));
                expected = ExpectedRevision::Exact(written.next_expected_version);
            }
            Err(_) => return,
        }
    }
}

/// What a check found.
#[derive(Debug)]
struct Found {
    events: usize,
    /// Unanswered appends found whole, and found absent.
    unanswered_whole: usize,
    unanswered_absent: usize,
}

/// Reads the whole log and checks it against the ledger.
async fn check(client: &eventstore::Client, ledger: &Ledger) -> Found {
    let read = client.read_all(&ReadAllOptions::default().max_count(usize::MAX)).await.expect("read");
    let events = collect(read).await.expect("events");
    let mut stored = HashMap::new();
    for event in &events {
        let event = event.get_original_event();
        let sent = ledger.sent.get(&event.id).unwrap_or_else(|| panic!("{} was never sent", event.id));
        assert_eq!(&event.data, sent, "event {} is served with other bytes than were sent", event.id);
        assert!(stored.insert(event.id, (event.stream_id.clone(), event.revision, event.position.commit)).is_none());
    }
    let (mut unanswered_whole, mut unanswered_absent) = (0, 0);
    for append in &ledger.appends {
        let found: Vec<_> = append.ids.iter().filter_map(|id| stored.get(id)).collect();
        match append.acknowledged {
            Some((last, position)) => {
                assert_eq!(found.len(), append.ids.len(), "an acknowledged append to {} lost events", append.stream);
                let first = last + 1 - append.ids.len() as u64;
                for (offset, (stream, revision, _)) in found.iter().enumerate() {
                    assert_eq!((stream, *revision), (&append.stream, first + offset as u64));
                }
                assert_eq!(found.last().expect("events").2, position, "acknowledged position of {}", append.stream);
            }
            None if found.is_empty() => unanswered_absent += 1,
            None => {
                assert_eq!(found.len(), append.ids.len(), "an unanswered append to {} is there in part", append.stream);
                unanswered_whole += 1;
            }
        }
    }
    for (id, position) in &ledger.served {
        assert_eq!(
            stored.get(id).map(|e| e.2),
            Some(*position),
            "event {id} was served to a subscriber before the kill"
        );
    }
    Found { events: events.len(), unanswered_whole, unanswered_absent }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill_9_during_concurrent_appends() {
    let kills = env_number("PROJECTOR_STORE_KILLS", 3);
    let mut random = Seeded::from_env("PROJECTOR_STORE_KILL_SEED");
    eprintln!("{kills} kills of the event store under {WRITERS} writers, PROJECTOR_STORE_KILL_SEED={}", random.seed());
    let data = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for round in 0..kills {
        let (store, client) = start_store(data.path()).await;
        let before = check(&client, &snapshot(&ledger)).await.events;

        // A subscriber records where each event is served; the kill comes
        // once it has been given a random number of this round's events.
        let target = 200 + random.below(1500) as usize;
        let options = SubscribeToAllOptions::default().position(StreamPosition::End);
        let mut subscription = client.subscribe_to_all(&options).await;
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, ledger) = (client.clone(), ledger.clone());
                let seeded = Seeded::new(random.below(u64::MAX));
                tokio::spawn(writer(client, format!("w{w}-r{round}"), w, seeded, ledger))
            })
            .collect();
        within("the subscriber to see the round's events", async {
            for _ in 0..target {
                let event = subscription.next().await.expect("served");
                let event = event.get_original_event();
                ledger.lock().expect("ledger").served.insert(event.id, event.position.commit);
            }
        })
        .await;
        store.kill();
        for writer in writers {
            within("a writer to see the store gone", writer).await.expect("writer");
        }
        eprintln!("round {round}: {before} events at the start, killed after {target} more were served");
    }
    let (_store, client) = start_store(data.path()).await;
    let ledger = snapshot(&ledger);
    let found = check(&client, &ledger).await;
    let acknowledged = ledger.appends.iter().filter(|a| a.acknowledged.is_some()).count();
    eprintln!(
        "after {kills} kills: {} events; {acknowledged} acknowledged appends all there at their positions, \
         {} served events all there; unanswered appends: {} whole, {} absent, 0 in part; lost 0",
        found.events,
        ledger.served.len(),
        found.unanswered_whole,
        found.unanswered_absent
    );
    assert!(acknowledged > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_with_a_reason_and_keeps_every_acknowledged_one() {
    let data = tempfile::tempdir().expect("tempdir");
    let (store, client) = start_store(data.path()).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let append = |stream: &str, n: u64| {
        let (client, ledger, stream) = (client.clone(), ledger.clone(), stream.to_owned());
        async move {
            let (id, data, bytes) = event(0, n, 1000);
            let result = client.append_to_stream(stream.as_str(), &Default::default(), data).await;
            let mut ledger = ledger.lock().expect("ledger");
            ledger.sent.insert(id, bytes);
            let acknowledged = result.as_ref().ok().map(|w| (w.next_expected_version, w.position.commit));
            ledger.appends.push(Append { stream, ids: vec![id], acknowledged });
            result
        }
    };
    for n in 0..20 {
        append("before", n).await.expect("append while there is room");
    }

    // The disk fills up: the log may grow by 8 KiB more, then writes fail.
    let log = data.path().join("events.log");
    let size = std::fs::metadata(&log).expect("log").len();
    store.limit_file_size(Some(size + 8 * 1024));
    let mut refused = None;
    for n in 0..100 {
        if let Err(e) = append("filling", n).await {
            refused = Some(e.to_string());
            break;
        }
    }
    let refused = refused.expect("an append is refused once the log cannot grow");
    eprintln!("refused with: {refused}");
    assert!(refused.contains("cannot write the event log"), "the reason names the log: {refused}");
    assert!(append("while-full", 0).await.is_err(), "still no room");
    assert!(std::fs::metadata(&log).expect("log").len() <= size + 8 * 1024);
    // Reads go on and serve exactly what was acknowledged.
    check(&client, &snapshot(&ledger)).await;

    // Space returns: appends go on where the acknowledged ones ended.
    store.limit_file_size(None);
    let last_acknowledged =
        snapshot(&ledger).appends.iter().filter_map(|a| a.acknowledged.map(|(_, position)| position)).max();
    let written = within("an append once there is room", async {
        loop {
            if let Ok(written) = append("after", 0).await {
                break written;
            }
        }
    })
    .await;
    assert!(Some(written.position.commit) > last_acknowledged);
    store.kill();

    let (_store, client) = start_store(data.path()).await;
    let total = check(&client, &snapshot(&ledger)).await.events;
    let acknowledged = snapshot(&ledger).appends.iter().filter(|a| a.acknowledged.is_some()).count();
    assert_eq!(total, acknowledged, "nothing but the acknowledged appends is in the log");
}
