//! What `GET /metrics` reports, in the Prometheus text format.
//!
//! Counters and histograms are updated where the work happens (the runner,
//! the query handlers); checkpoint and lag gauges are set from the
//! projections' statuses when the page is rendered, so they are never stale.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::status::{State, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabel {
    projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventTypeLabels {
    projection: String,
    event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    projection: String,
    /// `document`, `list` or `count`.
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    projection: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    /// `queue_full` or `rate_limited`.
    reason: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The host's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    events: Family<EventTypeLabels, Counter>,
    processing: Histograms<EventTypeLabels>,
    commit: Histograms<ProjectionLabel>,
    batch_events: Histograms<ProjectionLabel>,
    faults: Family<ProjectionLabel, Counter>,
    queries: Histograms<QueryLabels>,
    checkpoint: Family<ProjectionLabel, Gauge>,
    lag_events: Family<ProjectionLabel, Gauge>,
    lag_seconds: Family<ProjectionLabel, Gauge<f64, AtomicU64>>,
    state: Family<StateLabels, Gauge>,
    password_hashes: Counter,
    hashes_admitted: Gauge,
    registrations_shed: Family<ReasonLabel, Counter>,
    feed_readers: Gauge,
}

/// A registration admitted to password hashing; counted in
/// `projector_password_hash_admitted` until dropped.
#[derive(Debug)]
pub struct Admitted(Gauge);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// 10 µs to about 10 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 21))
}

/// 1 to 4096 events, doubling.
fn batch_size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            events: Family::default(),
            processing: Family::new_with_constructor(seconds_histogram),
            commit: Family::new_with_constructor(seconds_histogram),
            batch_events: Family::new_with_constructor(batch_size_histogram),
            faults: Family::default(),
            queries: Family::new_with_constructor(seconds_histogram),
            checkpoint: Family::default(),
            lag_events: Family::default(),
            lag_seconds: Family::default(),
            state: Family::default(),
            password_hashes: Counter::default(),
            hashes_admitted: Gauge::default(),
            registrations_shed: Family::default(),
            feed_readers: Gauge::default(),
        };
        {
            let mut r = metrics.registry.lock();
            r.register(
                "projector_events_processed",
                "Events handed to a projection's module and committed, by event type",
                metrics.events.clone(),
            );
            r.register(
                "projection_event_processing_seconds",
                "Time in the module per event (a batch's module time shared evenly among its events)",
                metrics.processing.clone(),
            );
            r.register(
                "projector_batch_commit_seconds",
                "Time to commit a batch's documents and checkpoint to the read model",
                metrics.commit.clone(),
            );
            r.register("projector_batch_events", "Events per batch handed to a module", metrics.batch_events.clone());
            r.register("projector_projection_faults", "Times a projection has faulted", metrics.faults.clone());
            r.register(
                "projector_query_seconds",
                "Time to answer a read-model query, by kind (document, list, count)",
                metrics.queries.clone(),
            );
            r.register(
                "projector_checkpoint_position",
                "Commit position of the last event a projection applied",
                metrics.checkpoint.clone(),
            );
            r.register(
                "projector_lag_events",
                "Events in $all after a projection's checkpoint",
                metrics.lag_events.clone(),
            );
            r.register(
                "projector_lag_seconds",
                "How long the oldest event after a projection's checkpoint has been waiting",
                metrics.lag_seconds.clone(),
            );
            r.register("projector_projection_state", "1 for the state a projection is in", metrics.state.clone());
            r.register(
                "projector_password_hashes",
                "argon2id password hashes computed for registrations",
                metrics.password_hashes.clone(),
            );
            r.register(
                "projector_password_hash_admitted",
                "Registrations admitted to password hashing: hashing, or waiting for a hashing thread",
                metrics.hashes_admitted.clone(),
            );
            r.register(
                "projector_registrations_shed",
                "Registrations refused before any work, by reason (queue_full: 503, rate_limited: 429)",
                metrics.registrations_shed.clone(),
            );
            r.register(
                "projector_feed_readers",
                "Subscriptions to $all this host reads, shared by its projections (the live one included)",
                metrics.feed_readers.clone(),
            );
        }
        metrics
    }

    /// Records a committed batch: its events by type, the module's time and the commit's time.
    pub fn batch_committed(&self, projection: &str, types: &HashMap<String, u64>, module: Duration, commit: Duration) {
        let total: u64 = types.values().sum();
        let label = ProjectionLabel { projection: projection.to_owned() };
        self.commit.get_or_create(&label).observe(commit.as_secs_f64());
        if total == 0 {
            return;
        }
        self.batch_events.get_or_create(&label).observe(total as f64);
        let per_event = module.as_secs_f64() / total as f64;
        for (event_type, &count) in types {
            let labels = EventTypeLabels { projection: projection.to_owned(), event_type: event_type.clone() };
            self.events.get_or_create(&labels).inc_by(count);
            let histogram = self.processing.get_or_create(&labels);
            for _ in 0..count {
                histogram.observe(per_event);
            }
        }
    }

    /// Records a password hash computed.
    pub fn password_hashed(&self) {
        self.password_hashes.inc();
    }

    /// Counts a registration admitted to hashing until the guard is dropped.
    pub fn hash_admitted(&self) -> Admitted {
        self.hashes_admitted.inc();
        Admitted(self.hashes_admitted.clone())
    }

    /// Records a registration refused for `reason` (`queue_full`, `rate_limited`).
    pub fn registration_shed(&self, reason: &'static str) {
        self.registrations_shed.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Records a fault.
    pub fn faulted(&self, projection: &str) {
        self.faults.get_or_create(&ProjectionLabel { projection: projection.to_owned() }).inc();
    }

    /// Records a query's time.
    pub fn query(&self, projection: &str, kind: &'static str, took: Duration) {
        self.queries
            .get_or_create(&QueryLabels { projection: projection.to_owned(), kind })
            .observe(took.as_secs_f64());
    }

    /// How many subscriptions to `$all` the host reads now.
    pub fn feed_readers(&self, readers: usize) {
        self.feed_readers.set(readers as i64);
    }

    /// The exposition, with gauges taken from `statuses`.
    pub fn render(&self, statuses: &[Status]) -> String {
        for status in statuses {
            let label = ProjectionLabel { projection: status.name.clone() };
            self.checkpoint.get_or_create(&label).set(status.serving.checkpoint.map_or(-1, |c| c as i64));
            self.lag_events.get_or_create(&label).set(status.lag_events as i64);
            self.lag_seconds.get_or_create(&label).set(status.lag_seconds);
            for state in State::ALL {
                let labels = StateLabels { projection: status.name.clone(), state: state.as_str() };
                self.state.get_or_create(&labels).set(i64::from(status.serving.state == state));
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry.lock());
        text
    }
}
