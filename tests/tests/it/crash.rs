//! `kill -9` at random points of a catch-up: the real `projector` binary
//! follows a preloaded history with the three example projections and is
//! killed again and again; at the end every read model must equal, document
//! for document, what an uninterrupted run of the same binary produced.
//! `inventory` sums quantities and `signup-stats` counts, so an event applied
//! twice or lost changes a document.
//!
//! The default suite kills 5 times during a 20,000-event catch-up. The long
//! run is `PROJECTOR_CRASH_KILLS=20 PROJECTOR_CRASH_EVENTS=200000`;
//! `PROJECTOR_CRASH_SEED` replays the kill points of a run (printed).

use std::collections::BTreeMap;

use eventstore::{AppendToStreamOptions, EventData};
use projector_tests::{env_number, Seeded, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Api, HostProcess};

/// Each projection's collections.
pub(crate) const MODELS: [(&str, &str, &[&str]); 3] = [
    ("user-directory", env!("WASM_USER_DIRECTORY"), &["users", "emails"]),
    ("signup-stats", env!("WASM_SIGNUP_STATS"), &["domains", "days"]),
    ("inventory", env!("WASM_INVENTORY"), &["stock", "skus"]),
];

/// A registration or a stock movement, by its number.
fn event(n: u64) -> EventData {
    let (event_type, data, version) = if n % 3 == 2 {
        let kinds = ["StockReceived", "StockReceived", "StockShipped", "StockAdjusted"];
        let quantity = if n % 4 == 3 { -((n % 5) as i64) } else { (n % 9) as i64 + 1 };
        let data =
            json!({"sku": format!("SKU-{:03}", n % 97), "warehouse": format!("WH-{}", n % 5), "quantity": quantity});
        (kinds[(n % 4) as usize], data, 1)
    } else {
        let data = json!({"userId": format!("u{n}"), "email": format!("user{n}@domain{}.example", n % 37),
            "username": format!("user_{n}"), "passwordHash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            "registeredAt": format!("2026-11-{:02}T10:00:00Z", n % 30 + 1)});
        ("UserRegistered", data, 2)
    };
    EventData::json(event_type, &data)
        .expect("event")
        .metadata_as_json(&json!({"schemaVersion": version}))
        .expect("metadata")
}

/// Appends `total` events, registrations to `user-` streams and stock
/// movements to `stock-` streams, 500 per append; each append's commit position.
pub(crate) async fn preload(events: &eventstore::Client, total: u64) -> Vec<u64> {
    let mut positions = Vec::new();
    for block in 0..total.div_ceil(500) {
        let numbers = block * 500..((block + 1) * 500).min(total);
        let (users, stock): (Vec<u64>, Vec<u64>) = numbers.partition(|n| n % 3 != 2);
        for (prefix, numbers) in [("user", users), ("stock", stock)] {
            let batch: Vec<EventData> = numbers.into_iter().map(event).collect();
            let stream = format!("{prefix}-b{block}");
            let written =
                events.append_to_stream(stream, &AppendToStreamOptions::default(), batch).await.expect("append");
            positions.push(written.position.commit);
        }
    }
    positions
}

pub(crate) async fn deploy_all(api: &Api) {
    for (name, module, _) in MODELS {
        let (status, body) = api.deploy(name, module).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

/// Answers once `user-directory` has applied `position`.
pub(crate) async fn reached(api: &Api, position: u64) {
    let path = format!("/projections/user-directory/collections/users?limit=1&at_least={position}");
    let (status, body) = api.get_caught_up(&path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
}

/// Every document of every collection, once each projection has applied `last`.
pub(crate) async fn dump(api: &Api, last: u64) -> BTreeMap<String, Value> {
    let mut documents = BTreeMap::new();
    for (name, _, collections) in MODELS {
        for collection in collections {
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/projections/{name}/collections/{collection}?limit=1000&at_least={last}");
                if let Some(cursor) = &cursor {
                    path.push_str(&format!("&cursor={cursor}"));
                }
                let (status, page) = api.get_caught_up(&path).await;
                assert_eq!(status, StatusCode::OK, "{path}: {page}");
                for item in page["items"].as_array().expect("items") {
                    let key = format!("{name}/{collection}/{}", item["key"].as_str().expect("key"));
                    documents.insert(key, item["doc"].clone());
                }
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
        }
    }
    documents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_after_repeated_kill_9_during_catch_up_equal_an_uninterrupted_run() {
    let kills = env_number("PROJECTOR_CRASH_KILLS", 5);
    let total = env_number("PROJECTOR_CRASH_EVENTS", 20_000);
    let mut random = Seeded::from_env("PROJECTOR_CRASH_SEED");
    eprintln!("crash test: {kills} kills during a {total}-event catch-up, PROJECTOR_CRASH_SEED={}", random.seed());

    let store = TestEnv::start().await;
    let eventstore = store.server().connection_string();
    let positions = preload(&store.client(), total).await;
    let last = *positions.last().expect("appended");

    let clean_dir = tempfile::tempdir().expect("tempdir");
    let clean = HostProcess::spawn(clean_dir.path(), &eventstore).await;
    deploy_all(clean.api()).await;
    let expected = dump(clean.api(), last).await;
    clean.kill();
    assert!(expected.len() > 1000, "the history builds a sizeable read model: {}", expected.len());

    let data = tempfile::tempdir().expect("tempdir");
    let mut host = HostProcess::spawn(data.path(), &eventstore).await;
    deploy_all(host.api()).await;
    let mut progress = Vec::new();
    let segment = positions.len() as u64 / kills.max(1);
    for kill in 0..kills {
        // The kill point: once user-directory has passed a pseudo-random
        // position in the kill's share of the history (the other two are
        // wherever they are), then at once.
        let target = positions[(kill * segment + random.below(segment)) as usize];
        reached(host.api(), target).await;
        host.kill();
        host = HostProcess::spawn(data.path(), &eventstore).await;
        let (_, status) = host.api().get("/projections").await;
        progress.push(
            status.as_array().expect("list").iter().map(|p| p["events_processed"].as_u64().unwrap_or(0)).sum::<u64>(),
        );
    }
    eprintln!("events processed by the three after each restart: {progress:?}");
    let actual = dump(host.api(), last).await;
    let differing: Vec<&String> =
        expected.keys().chain(actual.keys()).filter(|key| expected.get(*key) != actual.get(*key)).take(5).collect();
    assert!(differing.is_empty(), "{} documents differ after {kills} kills, e.g. {differing:?}", differing.len());
    assert_eq!(actual.len(), expected.len());
    eprintln!("{} documents equal to the uninterrupted run's after {kills} kills", actual.len());
}
