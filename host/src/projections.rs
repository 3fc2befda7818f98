//! Deployed projections and their lifecycle: deploy, `continue` swaps,
//! blue/green rebuilds, rollback, stop/start/reset/retry and delete, all
//! while the host keeps serving queries.
//!
//! A projection has one or two *lanes*. A lane is a read model and the runner
//! that feeds it (see `runner.rs`). The serving lane answers queries; during a
//! blue/green rebuild a candidate lane builds a fresh read model from the
//! start of `$all`, and replaces the serving lane, in one pointer swap, once
//! it has caught up. A `continue` swap keeps the lane and hands its runner
//! new code between two batches.
//!
//! Every change is recorded in the registry (`registry.rs`) before it is
//! acknowledged, and changes to deployments are serialised by one lock, so
//! two requests never interleave their steps. Queries never take that lock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::head::Head;
use crate::metrics::Metrics;
use crate::readmodel::ReadModelDb;
use crate::registry::{Entry, LaneRecord, Registry, RunState};
pub use crate::registry::{OnError, ProjectionLimits};
pub use crate::runner::BatchConfig;
use crate::runner::{Control, Runner, RunnerHandle};
use crate::runtime::{DeployError, Module, Runtime};

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
    /// Not following events (stopped by a user, or the host is shutting down); queries are still answered.
    Stopped,
    /// Held up by something outside the module (the event store unreachable,
    /// a read-model write refused by a full disk); see `problem`. Retried with
    /// backoff; nothing is lost or applied twice meanwhile.
    Retrying,
}

impl State {
    /// Every state, in the order the API documents them.
    pub const ALL: [State; 5] = [State::Running, State::CatchingUp, State::Faulted, State::Stopped, State::Retrying];

    /// The state's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::CatchingUp => "catching-up",
            State::Running => "running",
            State::Faulted => "faulted",
            State::Stopped => "stopped",
            State::Retrying => "retrying",
        }
    }
}

/// Why a projection is faulted, and at which event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// One read model's progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneStatus {
    /// The version of the module building it.
    pub version: String,
    /// What its runner is doing.
    pub state: State,
    /// Commit position of the last applied event (null before the first batch).
    pub checkpoint: Option<u64>,
    /// Events applied so far.
    pub events_processed: u64,
    /// Events skipped under `on_error=skip`.
    pub dead_letters: u64,
    /// The fault, when faulted.
    pub fault: Option<FaultInfo>,
    /// What it is retrying after, when `retrying`.
    pub problem: Option<String>,
}

/// A projection's status as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The deployment name.
    pub name: String,
    /// The version answering queries.
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
    /// What it is retrying after, when `retrying` (the event store
    /// unreachable, a read-model write refused).
    pub problem: Option<String>,
    /// What happens when the module fails on an event.
    pub on_error: OnError,
    /// Events skipped under `on_error=skip` (see `/dead-letters`).
    pub dead_letters: u64,
    /// Sandbox limits set at deploy (host defaults for the rest).
    pub limits: ProjectionLimits,
    /// The version `rollback` returns to, if any.
    pub previous_version: Option<String>,
    /// A blue/green rebuild in progress.
    pub rebuild: Option<Rebuild>,
}

/// Progress of a blue/green rebuild.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rebuild {
    /// The version being built.
    pub version: String,
    /// What its runner is doing.
    pub state: State,
    /// Commit position of its last applied event.
    pub checkpoint: Option<u64>,
    /// Events of `$all` behind it (system events excluded).
    pub position: u64,
    /// Events in `$all` now (system events excluded).
    pub total: u64,
    /// Events per second since it started.
    pub rate: f64,
    /// Seconds until it catches up at that rate.
    pub eta_seconds: Option<f64>,
    /// Its fault, when faulted (queries stay on the serving version).
    pub fault: Option<FaultInfo>,
    /// What it is retrying after, when `retrying`.
    pub problem: Option<String>,
}

/// A read model and the runner that feeds it.
pub struct Lane {
    /// Its name in the registry (file name without `.sqlite`).
    pub readmodel: String,
    /// The read model.
    pub db: Arc<ReadModelDb>,
    status: watch::Sender<LaneStatus>,
    runner: Mutex<Option<RunnerHandle>>,
    /// When its runner started, and how many events it had applied then.
    started: Mutex<(Instant, u64)>,
    /// Set while it is a rebuild beside a serving lane: its runner runs at low CPU priority.
    background: Arc<AtomicBool>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("readmodel", &self.readmodel).field("status", &*self.status.borrow()).finish()
    }
}

impl Lane {
    /// Its current status.
    pub fn status(&self) -> LaneStatus {
        self.status.borrow().clone()
    }

    /// Stops its runner after the batch in flight (a no-op when none runs).
    async fn stop(&self) {
        self.end_runner(|reply| Control::Stop { reply }).await;
    }

    /// Stops its runner after the batch in flight, leaving the state as it is
    /// for the runner that takes over.
    async fn hand_over(&self) {
        self.end_runner(|reply| Control::Handover { reply }).await;
    }

    async fn end_runner(&self, message: impl FnOnce(oneshot::Sender<()>) -> Control) {
        let Some(handle) = self.runner.lock().take() else { return };
        let (reply, stopped) = oneshot::channel();
        if handle.control.send(message(reply)).await.is_ok() {
            let _ = stopped.await;
        }
        let _ = handle.task.await;
    }

    /// Stops its runner at once (host shutdown); the last batch may or may not commit.
    fn abort(&self) {
        if let Some(handle) = self.runner.lock().take() {
            handle.task.abort();
        }
        self.status.send_modify(|s| {
            if s.state != State::Faulted {
                s.state = State::Stopped;
            }
        });
    }

    fn control(&self) -> Option<tokio::sync::mpsc::Sender<Control>> {
        self.runner.lock().as_ref().filter(|h| !h.task.is_finished()).map(|h| h.control.clone())
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(handle) = self.runner.get_mut().take() {
            handle.task.abort();
        }
    }
}

/// One deployed projection.
#[derive(Debug)]
pub struct Projection {
    /// The deployment name.
    pub name: String,
    lanes: RwLock<Lanes>,
}

#[derive(Debug)]
struct Lanes {
    serving: Arc<Lane>,
    candidate: Option<Arc<Lane>>,
}

impl Projection {
    /// The lane answering queries now.
    pub fn serving(&self) -> Arc<Lane> {
        self.lanes.read().serving.clone()
    }

    /// The read model answering queries now.
    pub fn db(&self) -> Arc<ReadModelDb> {
        self.lanes.read().serving.db.clone()
    }

    fn candidate(&self) -> Option<Arc<Lane>> {
        self.lanes.read().candidate.clone()
    }

    /// Waits until the serving read model has applied `position`, or its
    /// runner faults or stops (then it never will). Follows a blue/green
    /// switch that happens while waiting.
    pub async fn wait_for(&self, position: u64) -> Result<(), LaneStatus> {
        loop {
            let lane = self.serving();
            let mut status = lane.status.subscribe();
            let ended = |s: &LaneStatus| matches!(s.state, State::Faulted | State::Stopped);
            let reached = |s: &LaneStatus| s.checkpoint.is_some_and(|c| c >= position);
            let outcome = status.wait_for(|s| reached(s) || ended(s)).await.map(|s| s.clone());
            match outcome {
                Ok(s) if reached(&s) => return Ok(()),
                Ok(s) if Arc::ptr_eq(&lane, &self.serving()) => return Err(s),
                Ok(_) => continue,
                Err(_) => return Err(lane.status()),
            }
        }
    }
}

impl Projection {
    /// Waits until the serving read model is `running`: caught up with the
    /// store and its declared indexes in place. An error if its runner faults
    /// or stops first.
    pub async fn wait_until_running(&self) -> Result<(), LaneStatus> {
        let lane = self.serving();
        let mut status = lane.status.subscribe();
        let outcome = status
            .wait_for(|s| matches!(s.state, State::Running | State::Faulted | State::Stopped))
            .await
            .map(|s| s.clone());
        match outcome {
            Ok(s) if s.state == State::Running => Ok(()),
            Ok(s) => Err(s),
            Err(_) => Err(lane.status()),
        }
    }
}

/// How a deploy replaces the running version of an existing projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// New code at the old checkpoint, on the same read model.
    Continue,
    /// New read model built from the start beside the old one; switch when caught up.
    Rebuild,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "continue" => Ok(Mode::Continue),
            "rebuild" => Ok(Mode::Rebuild),
            other => Err(format!("mode '{other}' must be 'continue' or 'rebuild'")),
        }
    }
}

/// Settings a deploy may give.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    /// How to replace a running version (`continue` if not given).
    pub mode: Option<Mode>,
    /// Poison-event policy (kept from the running version if not given; `fault` for a new name).
    pub on_error: Option<OnError>,
    /// Sandbox limits (kept from the running version if not given).
    pub limits: Option<ProjectionLimits>,
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployed {
    /// A new projection, reading `$all` from the start.
    Created,
    /// New code runs on the existing read model from its checkpoint.
    Swapped,
    /// A rebuild started; queries switch to it when it catches up.
    Rebuilding,
    /// The same module and settings were already deployed.
    Unchanged,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No projection has that name.
    #[error("no projection named '{0}'")]
    Unknown(String),
    /// The module failed validation.
    #[error(transparent)]
    InvalidModule(#[from] DeployError),
    /// The change does not fit the projection's state.
    #[error("{0}")]
    Conflict(String),
    /// The host failed (disk, registry).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Every deployed projection, by name.
pub struct Projections {
    runtime: Arc<Runtime>,
    client: eventstore::Client,
    data_dir: PathBuf,
    batch: BatchConfig,
    head: Arc<Head>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    deployed: RwLock<BTreeMap<String, Arc<Projection>>>,
    /// Serialises deployment changes.
    changes: tokio::sync::Mutex<()>,
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
    /// The projections recorded under `data_dir`, not started yet (see [`Projections::restore`]).
    /// Events are read through `client`; lag is measured against `head`;
    /// batches and faults are counted in `metrics`.
    pub fn new(
        runtime: Arc<Runtime>,
        client: eventstore::Client,
        data_dir: PathBuf,
        batch: BatchConfig,
        head: Arc<Head>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let registry = Arc::new(Registry::open(&data_dir)?);
        Ok(Projections {
            runtime,
            client,
            data_dir,
            batch,
            head,
            metrics,
            registry,
            deployed: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// The head of `$all` that lag is measured against.
    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
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
        let deployed: Vec<_> = self.deployed.read().values().cloned().collect();
        deployed.iter().map(|p| self.status(p)).collect()
    }

    /// `projection`'s status, with lag measured now.
    pub fn status(&self, projection: &Projection) -> Status {
        let entry = self.registry.get(&projection.name);
        let (serving, candidate) = {
            let lanes = projection.lanes.read();
            (lanes.serving.clone(), lanes.candidate.clone())
        };
        let lane = serving.status();
        let lag = self.head.lag(lane.checkpoint);
        Status {
            name: projection.name.clone(),
            version: lane.version,
            state: lane.state,
            checkpoint: lane.checkpoint,
            lag_events: lag.events,
            lag_seconds: lag.seconds,
            events_processed: lane.events_processed,
            fault: lane.fault,
            problem: lane.problem,
            dead_letters: lane.dead_letters,
            on_error: entry.as_ref().map(|e| e.on_error).unwrap_or_default(),
            limits: entry.as_ref().map(|e| e.limits).unwrap_or_default(),
            previous_version: entry.and_then(|e| e.previous).map(|p| p.version),
            rebuild: candidate.map(|c| self.rebuild_status(&c)),
        }
    }

    fn rebuild_status(&self, lane: &Lane) -> Rebuild {
        let status = lane.status();
        let total = self.head.lag(None).events;
        let behind = self.head.lag(status.checkpoint).events;
        let (since, events_then) = *lane.started.lock();
        let elapsed = since.elapsed().as_secs_f64();
        let rate =
            if elapsed > 0.0 { status.events_processed.saturating_sub(events_then) as f64 / elapsed } else { 0.0 };
        Rebuild {
            version: status.version,
            state: status.state,
            checkpoint: status.checkpoint,
            position: total.saturating_sub(behind),
            total,
            rate,
            eta_seconds: (rate > 0.0).then(|| behind as f64 / rate),
            fault: status.fault,
            problem: status.problem,
        }
    }

    /// Starts every projection the registry records, in the state it was in,
    /// at its checkpoint. Modules load from the artifact cache when it holds them.
    pub async fn restore(self: &Arc<Self>) -> anyhow::Result<()> {
        let _change = self.changes.lock().await;
        for (name, mut entry) in self.registry.entries() {
            let serving_module = match self.stored_module(&entry.serving.module).await {
                Ok(module) => Some(module),
                Err(e) => {
                    tracing::error!(projection = %name, error = %format!("{e:#}"), "cannot load the module; the projection is shown faulted");
                    entry.serving.state = RunState::Faulted;
                    entry.serving.fault = Some(FaultInfo {
                        reason: format!("the stored module cannot be loaded: {e:#}"),
                        stream: None,
                        revision: None,
                        position: None,
                        event_type: None,
                    });
                    None
                }
            };
            let serving = self.open_lane(&name, &entry.serving)?;
            let projection =
                Arc::new(Projection { name: name.clone(), lanes: RwLock::new(Lanes { serving, candidate: None }) });
            self.deployed.write().insert(name.clone(), projection.clone());
            if let (RunState::Running, Some(module)) = (entry.serving.state, serving_module) {
                self.start_lane(&name, &projection.serving(), module, &entry)?;
            }
            if let Some(record) = &entry.candidate {
                let module = self.stored_module(&record.module).await?;
                let lane = self.open_lane(&name, record)?;
                projection.lanes.write().candidate = Some(lane.clone());
                if record.state == RunState::Running {
                    self.start_candidate(&name, &lane, module, &entry)?;
                }
            }
            tracing::info!(projection = %name, version = %entry.serving.version, state = ?entry.serving.state, "projection restored");
        }
        Ok(())
    }

    /// Stops every runner at once (host shutdown); the registry keeps their states.
    pub fn stop_all(&self) {
        for projection in self.deployed.read().values() {
            let lanes = projection.lanes.read();
            lanes.serving.abort();
            if let Some(candidate) = &lanes.candidate {
                candidate.abort();
            }
        }
    }

    /// Compiles `bytes` on a blocking thread (loading them from the artifact cache when it can).
    pub async fn compile(&self, bytes: Arc<Vec<u8>>) -> Result<Module, ChangeError> {
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
            .await
            .map_err(|e| anyhow::anyhow!("the compile thread failed: {e}"))?;
        Ok(compiled?)
    }

    async fn stored_module(&self, sha: &str) -> anyhow::Result<Module> {
        let bytes = Arc::new(self.registry.module_bytes(sha)?);
        self.compile(bytes).await.map_err(|e| anyhow::anyhow!("stored module {sha} no longer loads: {e}"))
    }

    fn readmodel_path(&self, name: &str, readmodel: &str) -> PathBuf {
        self.data_dir.join("readmodels").join(name).join(format!("{readmodel}.sqlite"))
    }

    fn remove_readmodel(&self, name: &str, readmodel: &str) {
        let path = self.readmodel_path(name, readmodel);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            if let Err(e) = std::fs::remove_file(&file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = ?file, error = %e, "cannot remove a read model file");
                }
            }
        }
    }

    /// Opens the read model of `record`; its runner is not started. The
    /// module's declared indexes are created by the runner once it has
    /// caught up (an index persists in the file, so a read model that has
    /// caught up before has them already).
    fn open_lane(&self, name: &str, record: &LaneRecord) -> anyhow::Result<Arc<Lane>> {
        let db = Arc::new(ReadModelDb::open(&self.readmodel_path(name, &record.readmodel))?);
        let checkpoint = db.checkpoint()?;
        let state = match record.state {
            RunState::Running => State::CatchingUp,
            RunState::Stopped => State::Stopped,
            RunState::Faulted => State::Faulted,
        };
        let (status, _) = watch::channel(LaneStatus {
            version: record.version.clone(),
            state,
            checkpoint: checkpoint.map(|c| c.position),
            events_processed: checkpoint.map_or(0, |c| c.events),
            dead_letters: db.dead_letter_count()?,
            fault: record.fault.clone(),
            problem: None,
        });
        Ok(Arc::new(Lane {
            readmodel: record.readmodel.clone(),
            db,
            status,
            runner: Mutex::new(None),
            started: Mutex::new((Instant::now(), 0)),
            background: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Starts `lane`'s runner with `module` from its read model's checkpoint.
    fn start_lane(&self, name: &str, lane: &Arc<Lane>, module: Module, entry: &Entry) -> anyhow::Result<()> {
        let limits = entry.limits.apply(self.runtime.limits());
        let instance = self
            .runtime
            .instantiate_with(&module, limits)
            .map_err(|f| anyhow::anyhow!("cannot start the module: {f}"))?;
        let checkpoint = lane.db.checkpoint()?;
        let version = module.description().version.clone();
        lane.status.send_modify(|s| s.version = version);
        let runner = Runner {
            name: name.to_owned(),
            readmodel: lane.readmodel.clone(),
            runtime: self.runtime.clone(),
            module,
            instance: Some(instance),
            limits,
            on_error: entry.on_error,
            client: self.client.clone(),
            db: lane.db.clone(),
            status: lane.status.clone(),
            metrics: self.metrics.clone(),
            registry: self.registry.clone(),
            batch: self.batch,
            checkpoint,
        };
        *lane.started.lock() = (Instant::now(), checkpoint.map_or(0, |c| c.events));
        let handle =
            if lane.background.load(Ordering::Relaxed) { runner.spawn_in_background()? } else { runner.spawn() };
        *lane.runner.lock() = Some(handle);
        Ok(())
    }

    /// Starts a rebuild lane's runner, and the task that promotes it once it has caught up.
    fn start_candidate(
        self: &Arc<Self>,
        name: &str,
        lane: &Arc<Lane>,
        module: Module,
        entry: &Entry,
    ) -> anyhow::Result<()> {
        lane.background.store(true, Ordering::Relaxed);
        self.start_lane(name, lane, module, entry)?;
        let this = self.clone();
        let (name, lane) = (name.to_owned(), lane.clone());
        tokio::spawn(async move {
            let mut status = lane.status.subscribe();
            // A rebuild held up by an outage (`retrying`) goes on waiting.
            let settled = status
                .wait_for(|s| matches!(s.state, State::Running | State::Faulted | State::Stopped))
                .await
                .map(|s| s.state);
            if let Ok(State::Running) = settled {
                if let Err(e) = this.promote(&name, &lane).await {
                    tracing::error!(projection = %name, error = %format!("{e:#}"), "cannot switch to the rebuilt read model");
                }
            }
        });
        Ok(())
    }

    /// Makes the caught-up candidate `lane` the serving one; the replaced
    /// lane stops and is kept for rollback.
    async fn promote(&self, name: &str, lane: &Arc<Lane>) -> anyhow::Result<()> {
        let _change = self.changes.lock().await;
        let Some(projection) = self.get(name) else { return Ok(()) };
        if !projection.candidate().is_some_and(|c| Arc::ptr_eq(&c, lane)) {
            return Ok(());
        }
        let Some(mut entry) = self.registry.get(name) else { return Ok(()) };
        let Some(candidate) = entry.candidate.take() else { return Ok(()) };
        let replaced = std::mem::replace(&mut entry.serving, candidate);
        self.drop_previous(name, &entry);
        entry.previous = Some(replaced);
        self.registry.put(name, entry)?;
        let old = {
            let mut lanes = projection.lanes.write();
            let old = std::mem::replace(&mut lanes.serving, lane.clone());
            lanes.candidate = None;
            old
        };
        tracing::info!(projection = %name, version = %lane.status().version, "queries switched to the rebuilt read model");
        old.stop().await;
        // From here on it serves: follow live events at normal priority.
        lane.hand_over().await;
        lane.background.store(false, Ordering::Relaxed);
        if let Some(entry) = self.registry.get(name) {
            let module = self.stored_module(&entry.serving.module).await?;
            self.start_lane(name, lane, module, &entry)?;
        }
        Ok(())
    }

    /// Deletes the read model `entry.previous` keeps for rollback, unless a live lane uses it.
    fn drop_previous(&self, name: &str, entry: &Entry) {
        if let Some(previous) = &entry.previous {
            let live = previous.readmodel == entry.serving.readmodel
                || entry.candidate.as_ref().is_some_and(|c| c.readmodel == previous.readmodel);
            if !live {
                self.remove_readmodel(name, &previous.readmodel);
            }
        }
    }

    fn entry(&self, name: &str) -> Result<(Arc<Projection>, Entry), ChangeError> {
        match (self.get(name), self.registry.get(name)) {
            (Some(projection), Some(entry)) => Ok((projection, entry)),
            _ => Err(ChangeError::Unknown(name.to_owned())),
        }
    }

    /// Deploys `bytes` as `name`: a new projection, a `continue` swap or a
    /// blue/green rebuild. The module is validated first; a refused module
    /// changes nothing.
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        bytes: Vec<u8>,
        options: DeployOptions,
    ) -> Result<(Deployed, Status), ChangeError> {
        let bytes = Arc::new(bytes);
        let module = self.compile(bytes.clone()).await?;
        let _change = self.changes.lock().await;
        let limits = options.limits.or_else(|| self.registry.get(name).map(|e| e.limits)).unwrap_or_default();
        if let Err(fault) = self.runtime.instantiate_with(&module, limits.apply(self.runtime.limits())) {
            return Err(DeployError::Invalid(format!("the module cannot start under its limits: {fault}")).into());
        }
        let sha = self.registry.store_module(&bytes)?;
        let record = LaneRecord {
            module: sha.clone(),
            version: module.description().version.clone(),
            readmodel: String::new(),
            state: RunState::Running,
            fault: None,
        };
        let Some(mut entry) = self.registry.get(name) else {
            let mut entry = Entry {
                on_error: options.on_error.unwrap_or_default(),
                limits: options.limits.unwrap_or_default(),
                serving: record,
                candidate: None,
                previous: None,
                next_readmodel: 0,
            };
            entry.serving.readmodel = entry.new_readmodel(&sha);
            let lane = self.open_lane(name, &entry.serving)?;
            self.registry.put(name, entry.clone())?;
            let projection = Arc::new(Projection {
                name: name.to_owned(),
                lanes: RwLock::new(Lanes { serving: lane, candidate: None }),
            });
            self.deployed.write().insert(name.to_owned(), projection.clone());
            self.start_lane(name, &projection.serving(), module, &entry)?;
            tracing::info!(projection = name, version = %entry.serving.version, "projection deployed");
            return Ok((Deployed::Created, self.status(&projection)));
        };
        let projection = self.get(name).ok_or_else(|| ChangeError::Unknown(name.to_owned()))?;
        if let Some(candidate) = &entry.candidate {
            return Err(ChangeError::Conflict(format!(
                "a rebuild of '{name}' to version {} is in progress; wait for it to switch or roll it back first",
                candidate.version
            )));
        }
        let settings_changed =
            options.on_error.is_some_and(|o| o != entry.on_error) || options.limits.is_some_and(|l| l != entry.limits);
        entry.on_error = options.on_error.unwrap_or(entry.on_error);
        entry.limits = options.limits.unwrap_or(entry.limits);
        let deployed = match options.mode.unwrap_or(Mode::Continue) {
            Mode::Continue if sha == entry.serving.module && !settings_changed => Deployed::Unchanged,
            Mode::Continue => {
                self.drop_previous(name, &entry);
                entry.previous = Some(entry.serving.clone());
                self.swap_in_place(name, &projection, entry, module, record).await?;
                Deployed::Swapped
            }
            Mode::Rebuild => {
                self.drop_previous(name, &entry);
                entry.previous = None;
                let mut record = record;
                record.readmodel = entry.new_readmodel(&sha);
                let lane = self.open_lane(name, &record)?;
                entry.candidate = Some(record);
                self.registry.put(name, entry.clone())?;
                projection.lanes.write().candidate = Some(lane.clone());
                self.start_candidate(name, &lane, module, &entry)?;
                tracing::info!(projection = name, "blue/green rebuild started");
                Deployed::Rebuilding
            }
        };
        Ok((deployed, self.status(&projection)))
    }

    /// Runs `module` on the serving read model from its checkpoint: the
    /// batch in flight finishes under the old code. `entry` is recorded with
    /// `record`'s module serving.
    async fn swap_in_place(
        &self,
        name: &str,
        projection: &Projection,
        mut entry: Entry,
        module: Module,
        record: LaneRecord,
    ) -> Result<(), ChangeError> {
        let lane = projection.serving();
        for (collection, field) in &module.description().indexes {
            lane.db.create_index(collection, field)?;
        }
        entry.serving.module = record.module;
        entry.serving.version = record.version.clone();
        if entry.serving.state == RunState::Faulted {
            entry.serving.state = RunState::Running;
            entry.serving.fault = None;
        }
        self.registry.put(name, entry.clone())?;
        match (entry.serving.state, lane.control()) {
            (RunState::Running, Some(control)) => {
                let limits = entry.limits.apply(self.runtime.limits());
                let instance = self
                    .runtime
                    .instantiate_with(&module, limits)
                    .map_err(|f| anyhow::anyhow!("cannot start the module: {f}"))?;
                let (reply, installed) = oneshot::channel();
                let swap =
                    Control::Swap { module, instance: Box::new(instance), on_error: entry.on_error, limits, reply };
                if control.send(swap).await.is_err() || installed.await.is_err() {
                    return Err(anyhow::anyhow!("the runner of '{name}' stopped during the swap").into());
                }
            }
            (RunState::Running, None) => self.start_lane(name, &lane, module, &entry)?,
            _ => lane.status.send_modify(|s| s.version = record.version),
        }
        tracing::info!(projection = name, version = %entry.serving.version, "new code swapped in at the checkpoint");
        Ok(())
    }

    /// Returns to the previous version. Cancels a rebuild in progress; after a
    /// `continue` swap, runs the previous code from the checkpoint; after a
    /// rebuild, serves the previous read model again (it catches up from
    /// where it stopped). Rolling back twice returns to the newer version.
    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<Status, ChangeError> {
        let _change = self.changes.lock().await;
        let (projection, mut entry) = self.entry(name)?;
        if let Some(candidate) = entry.candidate.take() {
            let lane = projection.lanes.write().candidate.take();
            if let Some(lane) = lane {
                lane.stop().await;
            }
            self.registry.put(name, entry)?;
            self.remove_readmodel(name, &candidate.readmodel);
            tracing::info!(projection = name, "rebuild cancelled");
            return Ok(self.status(&projection));
        }
        let Some(previous) = entry.previous.clone() else {
            return Err(ChangeError::Conflict(format!("'{name}' has no previous version to roll back to")));
        };
        let module = self.stored_module(&previous.module).await?;
        if previous.readmodel == entry.serving.readmodel {
            entry.previous = Some(entry.serving.clone());
            self.swap_in_place(name, &projection, entry, module, previous).await?;
        } else {
            let running = entry.serving.state != RunState::Stopped;
            let mut restored = previous;
            restored.state = if running { RunState::Running } else { RunState::Stopped };
            restored.fault = None;
            let lane = self.open_lane(name, &restored)?;
            let mut replaced = std::mem::replace(&mut entry.serving, restored);
            replaced.state = RunState::Stopped;
            entry.previous = Some(replaced);
            self.registry.put(name, entry.clone())?;
            if running {
                self.start_lane(name, &lane, module, &entry)?;
            }
            let old = std::mem::replace(&mut projection.lanes.write().serving, lane);
            old.stop().await;
        }
        tracing::info!(projection = name, "rolled back");
        Ok(self.status(&projection))
    }

    /// Stops following events (queries keep being answered from the read model).
    pub async fn stop(&self, name: &str) -> Result<Status, ChangeError> {
        let _change = self.changes.lock().await;
        let (projection, mut entry) = self.entry(name)?;
        for lane in [Some(&mut entry.serving), entry.candidate.as_mut()].into_iter().flatten() {
            if lane.state == RunState::Running {
                lane.state = RunState::Stopped;
            }
        }
        self.registry.put(name, entry)?;
        let (serving, candidate) = (projection.serving(), projection.candidate());
        serving.stop().await;
        if let Some(candidate) = candidate {
            candidate.stop().await;
        }
        Ok(self.status(&projection))
    }

    /// Starts a stopped projection again from its checkpoint.
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<Status, ChangeError> {
        self.resume(name, RunState::Stopped).await
    }

    /// Starts a faulted projection again from its checkpoint, with a fresh
    /// instance: for faults that may not repeat (a timeout under load, a fixed dependency).
    pub async fn retry(self: &Arc<Self>, name: &str) -> Result<Status, ChangeError> {
        self.resume(name, RunState::Faulted).await
    }

    async fn resume(self: &Arc<Self>, name: &str, from: RunState) -> Result<Status, ChangeError> {
        let _change = self.changes.lock().await;
        let (projection, mut entry) = self.entry(name)?;
        let states = [Some(entry.serving.state), entry.candidate.as_ref().map(|c| c.state)];
        if !states.contains(&Some(from)) {
            let (state, hint) = match from {
                RunState::Faulted => ("faulted", ""),
                _ => (
                    "stopped",
                    if entry.serving.state == RunState::Faulted { "; it is faulted: use retry" } else { "" },
                ),
            };
            if from == RunState::Stopped && entry.serving.state == RunState::Running {
                return Ok(self.status(&projection));
            }
            return Err(ChangeError::Conflict(format!("'{name}' is not {state}{hint}")));
        }
        let mut restart = Vec::new();
        if entry.serving.state == from {
            entry.serving.state = RunState::Running;
            entry.serving.fault = None;
            restart.push((projection.serving(), entry.serving.module.clone(), false));
        }
        if let Some(candidate) = entry.candidate.as_mut().filter(|c| c.state == from) {
            candidate.state = RunState::Running;
            candidate.fault = None;
            if let Some(lane) = projection.candidate() {
                restart.push((lane, candidate.module.clone(), true));
            }
        }
        self.registry.put(name, entry.clone())?;
        for (lane, sha, is_candidate) in restart {
            let module = self.stored_module(&sha).await?;
            if is_candidate {
                self.start_candidate(name, &lane, module, &entry)?;
            } else {
                self.start_lane(name, &lane, module, &entry)?;
            }
        }
        Ok(self.status(&projection))
    }

    /// Rebuilds the read model from scratch under the same version: queries
    /// see the new, empty read model at once, filling as it catches up.
    pub async fn reset(self: &Arc<Self>, name: &str) -> Result<Status, ChangeError> {
        let _change = self.changes.lock().await;
        let (projection, mut entry) = self.entry(name)?;
        let module = self.stored_module(&entry.serving.module).await?;
        let old_readmodel = entry.serving.readmodel.clone();
        let mut record = entry.serving.clone();
        record.readmodel = entry.new_readmodel(&record.module);
        record.state = RunState::Running;
        record.fault = None;
        let lane = self.open_lane(name, &record)?;
        let cancelled = entry.candidate.take();
        if let Some(previous) = entry.previous.as_mut().filter(|p| p.readmodel == old_readmodel) {
            previous.readmodel = record.readmodel.clone();
        }
        entry.serving = record;
        self.registry.put(name, entry.clone())?;
        self.start_lane(name, &lane, module, &entry)?;
        let (old, candidate) = {
            let mut lanes = projection.lanes.write();
            (std::mem::replace(&mut lanes.serving, lane), lanes.candidate.take())
        };
        old.stop().await;
        self.remove_readmodel(name, &old_readmodel);
        if let (Some(lane), Some(record)) = (candidate, cancelled) {
            lane.stop().await;
            self.remove_readmodel(name, &record.readmodel);
        }
        tracing::info!(projection = name, "read model reset");
        Ok(self.status(&projection))
    }

    /// Stops `name` and removes its read models, its registry entry, and
    /// its modules unless another projection uses them.
    pub async fn delete(&self, name: &str) -> Result<(), ChangeError> {
        let _change = self.changes.lock().await;
        let (projection, _) = self.entry(name)?;
        self.registry.remove(name)?;
        self.deployed.write().remove(name);
        let (serving, candidate) = (projection.serving(), projection.candidate());
        serving.stop().await;
        if let Some(candidate) = candidate {
            candidate.stop().await;
        }
        let dir = self.data_dir.join("readmodels").join(name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = ?dir, error = %e, "cannot remove the read models");
        }
        tracing::info!(projection = name, "projection deleted");
        Ok(())
    }
}
