//! Several hosts over one PostgreSQL (ADR 0012): three real `projector serve
//! --readmodels postgres://…` processes, one event store (the test's, which
//! outlives every host), one real PostgreSQL server.
//!
//! What must hold: projections spread over the hosts; every host answers
//! every projection's queries; a host killed or frozen mid-catch-up has its
//! lanes taken over and the read models end equal, document for document, to
//! an uninterrupted single-host run (`inventory` sums and `signup-stats`
//! counts, so a batch applied twice or lost shows); a frozen owner that wakes
//! up steps down instead of committing; changes asked of a host that does not
//! run the projection are applied by the one that does; PostgreSQL restarted
//! under running hosts is retried.
//!
//! `PROJECTOR_CLUSTER_KILLS` / `PROJECTOR_CLUSTER_EVENTS` / `PROJECTOR_CLUSTER_SEED`
//! make the kill test longer or replay it.

use std::collections::BTreeMap;
use std::time::Instant;

use projector_tests::{env_number, within, PostgresServer, Seeded, TestEnv};
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use crate::crash::{deploy_all, dump, preload, reached, MODELS};
use crate::support::{tally, Api, HostProcess};

/// The hosts' names.
const IDS: [&str; 3] = ["host-a", "host-b", "host-c"];

/// Three hosts, an event store and PostgreSQL are a lot for a two-core CI
/// machine that runs other tests beside them: these tests take turns, so
/// that a starved machine does not stretch a takeover past the tests' patience.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three host processes sharing one database, each restartable on its own data directory.
struct Hosts {
    eventstore: String,
    url: String,
    dirs: Vec<TempDir>,
    hosts: Vec<Option<HostProcess>>,
}

impl Hosts {
    async fn start(eventstore: String, url: String) -> Hosts {
        let dirs = (0..IDS.len()).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let mut hosts = Hosts { eventstore, url, dirs, hosts: (0..IDS.len()).map(|_| None).collect() };
        for i in 0..IDS.len() {
            hosts.spawn(i).await;
        }
        hosts
    }

    async fn spawn(&mut self, i: usize) {
        let (url, id) = (self.url.clone(), IDS[i]);
        let host = HostProcess::spawn_with(self.dirs[i].path(), &self.eventstore, move |command| {
            command.args(["--readmodels", &url, "--host-id", id]);
        })
        .await;
        self.hosts[i] = Some(host);
    }

    fn host(&self, i: usize) -> &HostProcess {
        self.hosts[i].as_ref().expect("host running")
    }

    fn api(&self, i: usize) -> &Api {
        self.host(i).api()
    }

    /// A running host other than `not`.
    fn other(&self, not: usize) -> usize {
        (0..IDS.len()).find(|&i| i != not && self.hosts[i].is_some()).expect("another host runs")
    }

    fn kill(&mut self, i: usize) {
        self.hosts[i].take().expect("host running").kill();
    }

    /// Every projection's status as host `i` answers it, by name.
    async fn statuses(&self, i: usize) -> BTreeMap<String, Value> {
        let (status, list) = self.api(i).get("/projections").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let list = list.as_array().expect("list").clone();
        list.into_iter().map(|p| (p["name"].as_str().expect("name").to_owned(), p)).collect()
    }

    /// The host running `name`'s serving lane, by its own word (a host's
    /// view of a lane run elsewhere may lag by a round), once `done` accepts
    /// its name; `what` says what is awaited.
    async fn owner_once(&self, what: &str, name: &str, done: impl Fn(&str) -> bool) -> usize {
        within(what, async {
            loop {
                for (i, id) in IDS.iter().enumerate() {
                    if self.hosts[i].is_none() || !done(id) {
                        continue;
                    }
                    let statuses = self.statuses(i).await;
                    if statuses.get(name).and_then(|s| s["host"].as_str()) == Some(id) {
                        return i;
                    }
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    }

    /// The `tally` total through host `i` once it has applied `at_least`
    /// (asked again while the host answers 504: not there yet).
    async fn total(&self, i: usize, at_least: u64) -> Value {
        let path = format!("/projections/tally/collections/totals/all?at_least={at_least}");
        let (status, body) = self.api(i).get_caught_up(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// What a single host (SQLite, no cluster) builds from the history: the reference.
async fn reference(eventstore: &str, last: u64) -> BTreeMap<String, Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = HostProcess::spawn(dir.path(), eventstore).await;
    deploy_all(host.api()).await;
    let documents = dump(host.api(), last).await;
    host.kill();
    assert!(documents.len() > 500, "the history builds a sizeable read model: {}", documents.len());
    documents
}

/// Sends `SIG<name>` to process `pid`.
fn signal(pid: u32, name: &str) {
    let sent = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("kill");
    assert!(sent.success(), "kill -{name} {pid}");
}

fn assert_same(expected: &BTreeMap<String, Value>, actual: &BTreeMap<String, Value>, after: &str) {
    let differing: Vec<&String> =
        expected.keys().chain(actual.keys()).filter(|key| expected.get(*key) != actual.get(*key)).take(5).collect();
    assert!(differing.is_empty(), "{} documents differ after {after}, e.g. {differing:?}", differing.len());
    assert_eq!(actual.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_projections_spread_over_three_hosts_and_every_host_answers_every_query() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let store = TestEnv::start().await;
    let eventstore = store.server().connection_string();
    let last = *preload(&store.client(), 3_000).await.last().expect("appended");
    let expected = reference(&eventstore, last).await;

    let hosts = Hosts::start(eventstore, projector_tests::fresh_database()).await;
    deploy_all(hosts.api(0)).await;
    within("each host to run one projection", async {
        loop {
            let statuses = hosts.statuses(0).await;
            let mut runners: Vec<&str> = statuses.values().filter_map(|s| s["host"].as_str()).collect();
            runners.sort_unstable();
            runners.dedup();
            if statuses.len() == 3 && runners.len() == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    for (i, id) in IDS.iter().enumerate() {
        let statuses = hosts.statuses(i).await;
        assert_eq!(statuses.len(), MODELS.len(), "{id} lists every projection");
        assert_same(&expected, &dump(hosts.api(i), last).await, &format!("reading through {id}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_is_taken_over_and_nothing_is_lost_or_applied_twice() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let kills = env_number("PROJECTOR_CLUSTER_KILLS", 3);
    let total = env_number("PROJECTOR_CLUSTER_EVENTS", 10_000);
    let mut random = Seeded::from_env("PROJECTOR_CLUSTER_SEED");
    eprintln!(
        "cluster kill test: {kills} kills during a {total}-event catch-up, PROJECTOR_CLUSTER_SEED={}",
        random.seed()
    );
    let store = TestEnv::start().await;
    let eventstore = store.server().connection_string();
    let positions = preload(&store.client(), total).await;
    let last = *positions.last().expect("appended");
    let expected = reference(&eventstore, last).await;

    let mut hosts = Hosts::start(eventstore, projector_tests::fresh_database()).await;
    deploy_all(hosts.api(0)).await;
    let segment = positions.len() as u64 / kills.max(1);
    let mut takeovers = Vec::new();
    for kill in 0..kills {
        let target = positions[(kill * segment + random.below(segment)) as usize];
        reached(hosts.api(0), target).await;
        let owner = hosts.owner_once("user-directory to have an owner", "user-directory", |_| true).await;
        hosts.kill(owner);
        let killed = Instant::now();
        let successor =
            hosts.owner_once("another host to take user-directory over", "user-directory", |h| h != IDS[owner]).await;
        takeovers.push(killed.elapsed());
        assert_ne!(successor, owner);
        hosts.spawn(owner).await;
    }
    eprintln!("takeover after kill -9 (seen through another host's status): {takeovers:?}");
    assert_same(&expected, &dump(hosts.api(1), last).await, &format!("{kills} kills"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_that_wakes_after_a_takeover_steps_down_without_committing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let store = TestEnv::start().await;
    let eventstore = store.server().connection_string();
    let positions = preload(&store.client(), 10_000).await;
    let last = *positions.last().expect("appended");
    let expected = reference(&eventstore, last).await;

    let hosts = Hosts::start(eventstore, projector_tests::fresh_database()).await;
    deploy_all(hosts.api(0)).await;
    reached(hosts.api(0), positions[positions.len() / 4]).await;
    let owner = hosts.owner_once("user-directory to have an owner", "user-directory", |_| true).await;
    let pid = hosts.host(owner).process().pid();
    signal(pid, "STOP");
    hosts.owner_once("another host to take the frozen one's lane", "user-directory", |h| h != IDS[owner]).await;
    signal(pid, "CONT");
    within("the woken host to step down", async {
        loop {
            let log = hosts.host(owner).log();
            if log.iter().any(|line| line.contains("stepping down")) {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_same(&expected, &dump(hosts.api(owner), last).await, "a freeze past the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_and_a_rebuild_asked_of_a_host_that_does_not_run_the_projection() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let store = TestEnv::start().await;
    let events = store.client();
    let hosts = Hosts::start(store.server().connection_string(), projector_tests::fresh_database()).await;
    let (status, body) = hosts.api(0).deploy("tally", tally::V1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, first) = tally::append(&events, "tally-1", 20).await;
    let owner = hosts.owner_once("tally to have an owner", "tally", |_| true).await;
    let elsewhere = hosts.other(owner);
    hosts.total(elsewhere, first).await;

    let (status, body) = hosts.api(elsewhere).deploy("tally", tally::V2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], "2.0.0", "{body}");
    let (ids, second) = tally::append(&events, "tally-1", 10).await;
    let total = hosts.total(owner, second).await;
    assert_eq!(total["count"], 30, "{total}");
    for id in ids {
        let (status, doc) = hosts.api(owner).get(&format!("/projections/tally/collections/events/{id}")).await;
        assert_eq!((status, &doc["version"]), (StatusCode::OK, &Value::from("2.0.0")), "{doc}");
    }

    let (status, body) = hosts.api(elsewhere).deploy_with("tally", tally::V1, "mode=rebuild").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let rebuilt = within("the rebuild to switch over", async {
        loop {
            let (_, status) = hosts.api(elsewhere).get("/projections/tally").await;
            if status["version"] == "1.0.0" && status.get("rebuild").is_none_or(Value::is_null) {
                break status["read_model"].clone();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_ne!(rebuilt, body["read_model"], "a rebuild serves a new read model");
    // The former owner serves the rebuilt read model too, built by V1 alone.
    within("the former owner to serve the rebuilt read model", async {
        while hosts.api(owner).get("/projections/tally").await.1["read_model"] != rebuilt {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let total = hosts.total(owner, second).await;
    assert_eq!(total, serde_json::json!({"count": 30, "version": "1.0.0"}), "every event once, by the rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_running_hosts_is_retried_and_queries_come_back() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let store = TestEnv::start().await;
    let events = store.client();
    let mut postgres = PostgresServer::start();
    let url = postgres.create_database("cluster");
    let hosts = Hosts::start(store.server().connection_string(), url).await;
    let (status, body) = hosts.api(0).deploy("tally", tally::V1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, before) = tally::append(&events, "tally-1", 10).await;
    hosts.total(1, before).await;

    postgres.stop();
    let (_, during) = tally::append(&events, "tally-1", 10).await;
    // The host running it reports the outage (the others cannot learn it from the database).
    within("the projection to report the outage", async {
        loop {
            for i in 0..IDS.len() {
                let (_, status) = hosts.api(i).get("/projections/tally").await;
                if status["state"] == "retrying" && status["problem"].is_string() {
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (status, body) = hosts.api(1).get("/projections/tally/collections/totals/all").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("readmodel_unavailable")),
        "{body}"
    );
    postgres.start_again();
    let total = hosts.total(2, during).await;
    assert_eq!(total["count"], 20, "{total}");
}
