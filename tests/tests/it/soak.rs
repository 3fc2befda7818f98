//! A bounded soak of the real `projector` binary: steady appends,
//! registrations and queries at once, with a `continue` swap between two
//! versions of a projection every swap period. Every second the host's
//! resident memory and open file descriptors are sampled.
//!
//! It must end with no failed request, every event applied exactly once
//! across all the swaps, every registered user readable, the file
//! descriptors back where they were after warm-up (a leak grows them with
//! every request or swap), and memory within a bound of its warm-up level.
//!
//! The default suite runs 20 s with a swap every 5 s; the long run is
//! `PROJECTOR_SOAK_SECONDS=600 PROJECTOR_SOAK_SWAP_SECONDS=60`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::{AppendToStreamOptions, EventData};
use projector_tests::{env_number, within, TestEnv};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::tally::{self, V1, V2};
use crate::support::{Api, HostProcess};

const TALLY: [&str; 2] = [V1, V2];

/// Resident memory (KiB) and open file descriptors of process `pid`.
fn sample(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds").count();
    (rss, fds)
}

async fn deploy(api: &Api, name: &str, module: &str) -> StatusCode {
    api.deploy_with(name, module, "mode=continue").await.0
}

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    appended: AtomicU64,
    last_position: AtomicU64,
    registered: Mutex<Vec<(String, u64)>>,
    queries: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn failed(&self, what: String) {
        self.failures.lock().expect("failures").push(what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_with_swaps_keeps_memory_and_descriptors_flat_and_loses_nothing() {
    let seconds = env_number("PROJECTOR_SOAK_SECONDS", 20);
    let swap_every = env_number("PROJECTOR_SOAK_SWAP_SECONDS", 5);
    eprintln!("soak: {seconds} s, a continue swap every {swap_every} s");
    let store = TestEnv::start().await;
    let events = store.client();
    let eventstore = store.server().connection_string();
    let data = tempfile::tempdir().expect("tempdir");
    let host = HostProcess::spawn(data.path(), &eventstore).await;
    let (api, http) = (host.api(), host.api().http.clone());
    assert_eq!(deploy(api, "tally", TALLY[0]).await, StatusCode::CREATED);
    assert_eq!(deploy(api, "user-directory", env!("WASM_USER_DIRECTORY")).await, StatusCode::CREATED);

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    // Appends: 10 events every 50 ms, about 200 events/s.
    load.push(tokio::spawn({
        let (events, tally, stop) = (events.clone(), tally.clone(), stop.clone());
        async move {
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let batch: Vec<EventData> =
                    (0..10).map(|i| EventData::json("Tallied", &json!({"n": n * 10 + i})).expect("event")).collect();
                match events
                    .append_to_stream(format!("tally-{}", n % 50), &AppendToStreamOptions::default(), batch)
                    .await
                {
                    Ok(written) => {
                        tally.appended.fetch_add(10, Ordering::Relaxed);
                        tally.last_position.fetch_max(written.position.commit, Ordering::Relaxed);
                    }
                    Err(e) => tally.failed(format!("append: {e}")),
                }
                n += 1;
            }
        }
    }));
    // Registrations: 5 per second, each read back at once through the read model.
    load.push(tokio::spawn({
        let (http, url, tally, stop) = (http.clone(), api.url(""), tally.clone(), stop.clone());
        async move {
            let mut pace = tokio::time::interval(Duration::from_millis(200));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let body = json!({"email": format!("soak{n}@example.com"), "username": format!("soak_{n}"),
                    "password": "correct horse battery"});
                let response = http.post(format!("{url}/users")).json(&body).send().await.expect("register");
                if response.status() != StatusCode::CREATED {
                    tally.failed(format!("register {n}: {}", response.status()));
                    continue;
                }
                let created: Value = response.json().await.expect("json");
                let (id, position) = (created["id"].as_str().expect("id"), created["position"].as_u64().expect("pos"));
                let read = http.get(format!("{url}/users/{id}?at_least={position}")).send().await.expect("read");
                if read.status() != StatusCode::OK {
                    tally.failed(format!("read user {n} back: {}", read.status()));
                }
                tally.registered.lock().expect("registered").push((id.to_owned(), position));
                n += 1;
            }
        }
    }));
    // Queries: two clients reading the total and a listing without pause.
    for client in 0..2 {
        load.push(tokio::spawn({
            let (http, url, tally, stop) = (http.clone(), api.url(""), tally.clone(), stop.clone());
            async move {
                let path = if client == 0 { "totals/all" } else { "events?limit=20" };
                while !stop.load(Ordering::Relaxed) {
                    let response =
                        http.get(format!("{url}/projections/tally/collections/{path}")).send().await.expect("query");
                    // The total exists once the first batch is in.
                    if !matches!(response.status(), StatusCode::OK | StatusCode::NOT_FOUND) {
                        tally.failed(format!("query {path}: {}", response.status()));
                    }
                    tally.queries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Samples every second, a swap every `swap_every` seconds.
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut swaps = 0;
    let mut lag_max = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for second in 1..=seconds {
        tick.tick().await;
        if second % swap_every == 0 {
            swaps += 1;
            let status = deploy(api, "tally", TALLY[swaps % 2]).await;
            if status != StatusCode::OK {
                tally.failed(format!("swap {swaps}: {status}"));
            }
        }
        let (_, status) = api.get("/projections/tally").await;
        if !matches!(status["state"].as_str(), Some("running" | "catching-up")) {
            tally.failed(format!("tally state at {second} s: {status}"));
        }
        lag_max = lag_max.max(status["lag_events"].as_u64().unwrap_or(0));
        samples.push(sample(host.process().pid()));
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        within("the load to stop", task).await.expect("load task");
    }

    // Every event once, whatever version applied it.
    let appended = tally.appended.load(Ordering::Relaxed);
    let last = tally.last_position.load(Ordering::Relaxed);
    let total = tally::total(api, "tally", last).await;
    assert_eq!(total["count"], appended, "{total}");
    let registered = tally.registered.lock().expect("registered").clone();
    for (id, position) in &registered {
        let (status, user) = api.get(&format!("/users/{id}?at_least={position}")).await;
        assert_eq!(status, StatusCode::OK, "user {id}: {user}");
    }
    let failures = tally.failures.lock().expect("failures").clone();
    assert!(failures.is_empty(), "{} failures, e.g. {:?}", failures.len(), &failures[..failures.len().min(5)]);

    // Resources: after the first half (warm-up: caches, connection pools,
    // compiled modules) descriptors must not grow, memory only within bounds.
    let warm = samples[samples.len() / 2];
    let (rss_end, fds_end) = *samples.last().expect("samples");
    let rss_peak = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let fds_peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    eprintln!(
        "soak: {:.0} s, {appended} events, {} registrations, {} queries, {swaps} swaps, lag max {lag_max} events; \
         RSS after warm-up {} KiB, end {rss_end} KiB, peak {rss_peak} KiB; fds after warm-up {}, end {fds_end}, \
         peak {fds_peak}; failures 0, lost 0, doubled 0",
        started.elapsed().as_secs_f64(),
        registered.len(),
        tally.queries.load(Ordering::Relaxed),
        warm.0,
        warm.1,
    );
    let series: Vec<String> = samples.iter().map(|(rss, fds)| format!("{}/{fds}", rss / 1024)).collect();
    eprintln!("RSS MiB / fds each second: {}", series.join(" "));
    assert!(fds_end <= warm.1 + 4, "file descriptors grew from {} to {fds_end}", warm.1);
    // The least of the last ten seconds: the host hands freed memory back
    // to the system every 10 s (`malloc_trim`), and between two trims the
    // swaps' compiles and the queries raise RSS by about 20 MiB a second,
    // so only a window as long as the trim period is sure to hold a sample
    // taken after one; a leak raises every sample.
    let rss_settled = samples[samples.len().saturating_sub(10)..].iter().map(|s| s.0).min().unwrap_or(rss_end);
    assert!(
        rss_settled <= warm.0 * 3 / 2 + 32 * 1024,
        "memory grew from {} KiB to {rss_settled} KiB (the least of the last ten samples)",
        warm.0
    );
}
