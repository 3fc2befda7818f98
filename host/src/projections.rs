//! Deployed projections: each one follows `$all` through the official
//! client, feeds batches to its module, and commits the batch's documents
//! with its checkpoint.
//!
//! One task per projection. Events arrive through a filtered catch-up
//! subscription that starts after the stored checkpoint; they are grouped into
//! batches (up to `max_batch` events or `max_wait`, whichever comes first),
//! run on a blocking thread (Wasm never runs on the async threads), and
//! committed in one SQLite transaction with the position of the batch's last
//! event. A fault stops the projection at that batch with nothing of it
//! applied; queries keep being served.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter};
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::head::Head;
use crate::metrics::Metrics;
use crate::readmodel::{Checkpoint, ReadModelDb};
use crate::runtime::{Description, Event, Fault, Instance, Module, Runtime};

/// A module's identity: the first 16 hex digits of its SHA-256. Read models
/// are kept per module, so new code never reads a read model built by other code.
pub fn module_id(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// How events are grouped into batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most events per batch.
    pub max_batch: usize,
    /// Longest a batch waits to fill once it has an event.
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_batch: 512, max_wait: Duration::from_millis(10) }
    }
}

/// What a projection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Reading history towards the head of `$all`.
    CatchingUp,
    /// At the head, applying live events.
    Running,
    /// Stopped by a fault; see `fault`.
    Faulted,
    /// Not following events (the host is shutting down); queries are still answered.
    Stopped,
}

impl State {
    /// Every state, in the order the API documents them.
    pub const ALL: [State; 4] = [State::Running, State::CatchingUp, State::Faulted, State::Stopped];

    /// The state's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::CatchingUp => "catching-up",
            State::Running => "running",
            State::Faulted => "faulted",
            State::Stopped => "stopped",
        }
    }
}

/// Why a projection is faulted, and at which event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultInfo {
    /// What went wrong.
    pub reason: String,
    /// The stream of the offending event, when one is known.
    pub stream: Option<String>,
    /// Its revision in that stream.
    pub revision: Option<u64>,
    /// Its commit position.
    pub position: Option<u64>,
    /// Its type.
    pub event_type: Option<String>,
}

/// A projection's status as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The deployment name.
    pub name: String,
    /// The module's version.
    pub version: String,
    /// What it is doing.
    pub state: State,
    /// Commit position of the last applied event (null before the first batch).
    pub checkpoint: Option<u64>,
    /// Events in `$all` after the checkpoint (system events excluded).
    pub lag_events: u64,
    /// How long the first event after the checkpoint has been waiting, in seconds.
    pub lag_seconds: f64,
    /// Events applied so far.
    pub events_processed: u64,
    /// The fault, when faulted.
    pub fault: Option<FaultInfo>,
}

/// One deployed projection.
#[derive(Debug)]
pub struct Projection {
    /// The deployment name.
    pub name: String,
    /// What the module said about itself.
    pub description: Description,
    /// Its read model.
    pub db: Arc<ReadModelDb>,
    status: watch::Sender<Status>,
    head: Arc<Head>,
    task: tokio::task::JoinHandle<()>,
}

impl Projection {
    /// The current status, with lag measured now.
    pub fn status(&self) -> Status {
        let mut status = self.status.borrow().clone();
        let lag = self.head.lag(status.checkpoint);
        status.lag_events = lag.events;
        status.lag_seconds = lag.seconds;
        status
    }

    /// Stops following events; the read model keeps answering queries.
    pub fn stop(&self) {
        self.task.abort();
        self.status.send_modify(|s| s.state = State::Stopped);
    }

    /// Waits until the checkpoint reaches `position`, or the projection
    /// faults or stops (then it never will).
    pub async fn wait_for(&self, position: u64) -> Result<(), Status> {
        let mut status = self.status.subscribe();
        let ended = |s: &Status| matches!(s.state, State::Faulted | State::Stopped);
        let reached =
            status.wait_for(|s| s.checkpoint.is_some_and(|c| c >= position) || ended(s)).await.map(|s| s.clone());
        match reached {
            Ok(s) if s.checkpoint.is_some_and(|c| c >= position) => Ok(()),
            Ok(s) => Err(s),
            Err(_) => Err(self.status()),
        }
    }
}

impl Drop for Projection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every deployed projection, by name.
pub struct Projections {
    runtime: Arc<Runtime>,
    client: eventstore::Client,
    data_dir: PathBuf,
    batch: BatchConfig,
    head: Arc<Head>,
    metrics: Arc<Metrics>,
    deployed: RwLock<BTreeMap<String, Arc<Projection>>>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections")
            .field("data_dir", &self.data_dir)
            .field("deployed", &self.deployed)
            .finish_non_exhaustive()
    }
}

impl Projections {
    /// An empty set, reading events through `client` and keeping read models under `data_dir`.
    /// Lag is measured against `head`; batches and faults are counted in `metrics`.
    pub fn new(
        runtime: Arc<Runtime>,
        client: eventstore::Client,
        data_dir: PathBuf,
        batch: BatchConfig,
        head: Arc<Head>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Projections { runtime, client, data_dir, batch, head, metrics, deployed: RwLock::new(BTreeMap::new()) }
    }

    /// The head of `$all` that lag is measured against.
    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops every projection (at host shutdown).
    pub fn stop_all(&self) {
        for projection in self.deployed.read().values() {
            projection.stop();
        }
    }

    /// The runtime modules are compiled with.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The projection deployed as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Projection>> {
        self.deployed.read().get(name).cloned()
    }

    /// Every projection's status, by name.
    pub fn statuses(&self) -> Vec<Status> {
        self.deployed.read().values().map(|p| p.status()).collect()
    }

    /// Starts `module` as `name`, with a read model keyed by the module's
    /// content (`module_id`), resuming from that read model's checkpoint.
    pub fn deploy(&self, name: &str, module_id: &str, module: Module) -> anyhow::Result<Arc<Projection>> {
        let description = module.description().clone();
        let db = Arc::new(ReadModelDb::open(
            &self.data_dir.join("readmodels").join(name).join(format!("{module_id}.sqlite")),
        )?);
        for (collection, field) in &description.indexes {
            db.create_index(collection, field)?;
        }
        let checkpoint = db.checkpoint()?;
        let instance =
            self.runtime.instantiate(&module).map_err(|f| anyhow::anyhow!("cannot start the module: {f}"))?;
        let (status, _) = watch::channel(Status {
            name: name.to_owned(),
            version: description.version.clone(),
            state: State::CatchingUp,
            checkpoint: checkpoint.map(|c| c.position),
            lag_events: 0,
            lag_seconds: 0.0,
            events_processed: checkpoint.map_or(0, |c| c.events),
            fault: None,
        });
        let runner = Runner {
            name: name.to_owned(),
            instance: Some(instance),
            client: self.client.clone(),
            description: description.clone(),
            db: db.clone(),
            status: status.clone(),
            metrics: self.metrics.clone(),
            batch: self.batch,
            checkpoint: checkpoint.unwrap_or_default(),
            started: checkpoint.is_some(),
        };
        let task = tokio::spawn(runner.run());
        let projection =
            Arc::new(Projection { name: name.to_owned(), description, db, status, head: self.head.clone(), task });
        self.deployed.write().insert(name.to_owned(), projection.clone());
        tracing::info!(projection = name, module = module_id, ?checkpoint, "projection deployed");
        Ok(projection)
    }
}

struct Runner {
    /// The deployment name.
    name: String,
    /// The module instance; lent to a blocking thread while a batch runs.
    instance: Option<Instance>,
    client: eventstore::Client,
    description: Description,
    db: Arc<ReadModelDb>,
    status: watch::Sender<Status>,
    metrics: Arc<Metrics>,
    batch: BatchConfig,
    checkpoint: Checkpoint,
    /// Whether `checkpoint` is a real position (a batch was committed).
    started: bool,
}

impl Runner {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(projection = %self.name, error = %format!("{e:#}"), ?backoff, "subscription lost; resubscribing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn filter(&self) -> SubscriptionFilter {
        let d = &self.description;
        if !d.stream_prefixes.is_empty() {
            d.stream_prefixes.iter().fold(SubscriptionFilter::on_stream_name(), |f, p| f.add_prefix(p))
        } else if !d.event_type_prefixes.is_empty() {
            d.event_type_prefixes.iter().fold(SubscriptionFilter::on_event_type(), |f, p| f.add_prefix(p))
        } else {
            SubscriptionFilter::on_event_type().exclude_system_events()
        }
    }

    /// Follows `$all` from the checkpoint. Returns `Ok` when the projection
    /// faulted (it stops for good), `Err` when the subscription broke.
    ///
    /// A feeder task reads the subscription and forms the next batch while
    /// this one runs and commits; the channel between them holds at most
    /// `PIPELINE_DEPTH` batches, so a slow module slows the reading down
    /// instead of buffering events without bound.
    async fn follow(&mut self) -> anyhow::Result<()> {
        let start = if self.started {
            StreamPosition::Position(eventstore::Position {
                commit: self.checkpoint.position,
                prepare: self.checkpoint.position,
            })
        } else {
            StreamPosition::Start
        };
        let options = SubscribeToAllOptions::default().position(start).filter(self.filter());
        let subscription = self.client.subscribe_to_all(&options).await;
        let (batches, mut next) = mpsc::channel(PIPELINE_DEPTH);
        let feeder = tokio::spawn(feed(subscription, self.description.clone(), self.batch, batches));
        let _feeder = AbortOnDrop(feeder);
        while let Some(batch) = next.recv().await {
            let Batch { events, position, caught_up } = batch?;
            if let Some(position) = position.filter(|&p| !self.started || p > self.checkpoint.position) {
                if let Err(fault) = self.apply(events, position).await {
                    self.metrics.faulted(&self.name);
                    self.status.send_modify(|s| {
                        s.state = State::Faulted;
                        s.fault = Some(fault);
                    });
                    tracing::error!(projection = %self.name, "projection faulted");
                    return Ok(());
                }
            }
            if caught_up {
                self.status.send_if_modified(|s| {
                    let change = s.state == State::CatchingUp;
                    if change {
                        s.state = State::Running;
                    }
                    change
                });
            }
        }
        anyhow::bail!("the subscription ended")
    }

    /// Runs and commits one batch on a blocking thread; on failure nothing of it is kept.
    async fn apply(&mut self, events: Vec<Event>, position: u64) -> Result<(), FaultInfo> {
        let checkpoint = Checkpoint { position, events: self.checkpoint.events + events.len() as u64 };
        let db = self.db.clone();
        let Some(mut instance) = self.instance.take() else {
            return Err(plain_fault("the module instance was lost after an earlier failure".into()));
        };
        let metrics = self.metrics.clone();
        let name = self.name.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = if events.is_empty() {
                Ok(Default::default())
            } else {
                instance.handle_batch(&events, db.clone()).map_err(|fault| fault_info(fault, &events))
            };
            let ran = started.elapsed();
            let committed = result.and_then(|writes| {
                db.commit(&writes, checkpoint).map_err(|e| plain_fault(format!("cannot commit the read model: {e:#}")))
            });
            if committed.is_ok() {
                let mut types: HashMap<String, u64> = HashMap::new();
                for event in &events {
                    match types.get_mut(&event.event_type) {
                        Some(count) => *count += 1,
                        None => {
                            types.insert(event.event_type.clone(), 1);
                        }
                    }
                }
                metrics.batch_committed(&name, &types, ran, started.elapsed() - ran);
            }
            (instance, committed)
        })
        .await;
        let (instance, committed) = ran.map_err(|e| plain_fault(format!("the batch thread failed: {e}")))?;
        self.instance = Some(instance);
        committed?;
        self.checkpoint = checkpoint;
        self.started = true;
        self.status.send_modify(|s| {
            s.checkpoint = Some(position);
            s.events_processed = checkpoint.events;
        });
        Ok(())
    }
}

/// Batches formed ahead of the one running.
const PIPELINE_DEPTH: usize = 2;

/// What the feeder hands the runner.
struct Batch {
    /// The events the module wants.
    events: Vec<Event>,
    /// Where the batch ends in `$all` (its last event or server checkpoint).
    position: Option<u64>,
    /// Whether the subscription reached the head of `$all` with this batch.
    caught_up: bool,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads `subscription` into batches of up to `config.max_batch` events,
/// closing a batch `config.max_wait` after its first message.
async fn feed(
    mut subscription: eventstore::Subscription,
    description: Description,
    config: BatchConfig,
    batches: mpsc::Sender<anyhow::Result<Batch>>,
) {
    loop {
        let first = match subscription.next_subscription_event().await {
            Ok(first) => first,
            Err(e) => {
                let _ = batches.send(Err(e.into())).await;
                return;
            }
        };
        let mut batch = Batch { events: Vec::new(), position: None, caught_up: false };
        let mut pending = Some(first);
        let deadline = tokio::time::Instant::now() + config.max_wait;
        while let Some(message) = pending.take() {
            match message {
                SubscriptionEvent::EventAppeared(resolved) => {
                    let recorded = resolved.get_original_event();
                    batch.position = Some(recorded.position.commit);
                    if description.wants(&recorded.stream_id, &recorded.event_type) {
                        batch.events.push(to_event(recorded));
                    }
                }
                SubscriptionEvent::Checkpoint(position) => batch.position = Some(position.commit),
                SubscriptionEvent::CaughtUp => batch.caught_up = true,
                _ => {}
            }
            if batch.events.len() >= config.max_batch {
                break;
            }
            match tokio::time::timeout_at(deadline, subscription.next_subscription_event()).await {
                Ok(Ok(next)) => pending = Some(next),
                Ok(Err(e)) => {
                    // Hand over what was read, then the error.
                    let _ = batches.send(Ok(batch)).await;
                    let _ = batches.send(Err(e.into())).await;
                    return;
                }
                Err(_) => {}
            }
        }
        if batches.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}

fn plain_fault(reason: String) -> FaultInfo {
    FaultInfo { reason, stream: None, revision: None, position: None, event_type: None }
}

fn fault_info(fault: Fault, events: &[Event]) -> FaultInfo {
    let event = match &fault {
        Fault::Guest { event_index, .. } => events.get(*event_index),
        _ => None,
    };
    FaultInfo {
        reason: fault.to_string(),
        stream: event.map(|e| e.stream_id.clone()),
        revision: event.map(|e| e.stream_revision),
        position: event.map(|e| e.commit_position),
        event_type: event.map(|e| e.event_type.clone()),
    }
}

fn to_event(recorded: &eventstore::RecordedEvent) -> Event {
    let created_ms = recorded.created.timestamp_millis();
    Event {
        stream_id: recorded.stream_id.clone(),
        event_type: recorded.event_type.clone(),
        event_id: recorded.id.to_string(),
        stream_revision: recorded.revision,
        commit_position: recorded.position.commit,
        created_ms,
        content_type: if recorded.is_json { "application/json".into() } else { "application/octet-stream".into() },
        data: recorded.data.to_vec(),
        metadata: recorded.custom_metadata.to_vec(),
    }
}
