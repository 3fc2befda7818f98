//! Deployed projections and the one owner of their state: deploy,
//! `continue` swaps, blue/green rebuilds, rollback, stop/start/reset/retry
//! and delete, all while the host keeps serving queries.
//!
//! A deployment has one or two *lanes* (`lane.rs`): a read model and the
//! runner that feeds it. The serving lane answers queries; during a
//! blue/green rebuild a candidate lane builds a fresh read model from the
//! start of `$all` and replaces the serving lane, in one pointer swap, once
//! it has caught up (`rebuild.rs`). A `continue` swap keeps the lane and
//! hands its runner new code between two batches (`changes.rs`).
//!
//! [`Deployments`] is the only writer of the registry. Changes requested
//! through the API are serialised by one async lock (and, with several hosts
//! over PostgreSQL, by an advisory lock all hosts share), so two requests
//! never interleave their steps, and each is recorded before it is
//! acknowledged. With several hosts a lane runs where its lease is held
//! (`keeper.rs` takes, renews and hands back leases); a change recorded by
//! one host reaches the host running the lane through the registry
//! (`reconcile.rs`).
//! Runners never write the registry: a runner reports its fault on a
//! channel, and the owner's recorder changes the entry in place (under the
//! registry's lock, like every other change) before the runner shows it.
//! Outside the change lock only those fault fields (a lane's `state` and
//! `fault`) can change, so a change may decide on an entry read at its start
//! but writes only the fields it changes, in place. Queries never take
//! either lock.

mod changes;
mod deployment;
mod keeper;
mod lane;
mod rebuild;
mod reconcile;
mod storage;
mod trial;
pub use trial::{Trial, TrialEvents, TrialOutcome, TrialWrite, View, MAX_TRIAL_EVENTS};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use parking_lot::RwLock;
use tokio::sync::mpsc;

pub use deployment::Deployment;
use lane::sandbox_limits;
pub use lane::Lane;
pub(crate) use storage::Storage;

use crate::feed::Head;
use crate::feed::SharedFeed;
use crate::metrics::Metrics;
use crate::registry::{Entry, Registry, RunState};
pub use crate::runner::BatchConfig;
use crate::runner::{FaultReport, Queries, Runner};
use crate::runtime::{DeployError, Module, Runtime};
use crate::settings::{OnError, ProjectionLimits};
use crate::status::{EffectiveLimits, FaultInfo, ModuleInfo, Previous, Status};

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

/// Why a change was refused. Surfaces as 404, 422, 409 or 500.
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
    /// The request itself asks for what cannot be done (a trial without a
    /// module, or over too many events).
    #[error("{0}")]
    Invalid(String),
    /// The host failed (disk, registry).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Every deployed projection, by name, and the one writer of their state.
pub struct Deployments {
    runtime: Arc<Runtime>,
    /// The event store, for trials' reads of the last events.
    client: eventstore::Client,
    /// The host's reads of `$all`, shared by its lanes.
    feed: Arc<SharedFeed>,
    storage: Storage,
    batch: BatchConfig,
    head: Arc<Head>,
    metrics: Arc<Metrics>,
    /// The queries being answered, which rebuilds give way to.
    queries: Arc<Queries>,
    registry: Arc<Registry>,
    deployed: RwLock<BTreeMap<String, Arc<Deployment>>>,
    /// Serialises deployment changes.
    changes: tokio::sync::Mutex<()>,
    /// Where runners report faults (see [`record_faults`]).
    reports: mpsc::UnboundedSender<FaultReport>,
    /// What the status says about each module compiled since the start (every
    /// serving module was: at its deploy or at the restore), by hash.
    modules: parking_lot::Mutex<BTreeMap<String, ModuleInfo>>,
    /// Set once the host shuts down: the keeper starts nothing more.
    stopping: std::sync::atomic::AtomicBool,
    /// With several hosts: projections whose registry entry changed
    /// elsewhere and whose lanes here are not in line with it yet.
    pending: parking_lot::Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for Deployments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployments")
            .field("storage", &self.storage)
            .field("deployed", &self.deployed)
            .finish_non_exhaustive()
    }
}

impl Deployments {
    /// The projections recorded in `storage`, not started yet (see
    /// [`Deployments::restore`]). Events are read through `client`; lag is
    /// measured against `head`; batches and faults are counted in `metrics`.
    /// Starts the task that records runners' faults, so it needs a tokio runtime.
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        client: eventstore::Client,
        storage: Storage,
        batch: BatchConfig,
        head: Arc<Head>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let registry = Arc::new(match &storage {
            Storage::Files(data) => Registry::open(data)?,
            Storage::Postgres(cluster) => Registry::open_postgres(&cluster.pg)?,
        });
        let (reports, received) = mpsc::unbounded_channel();
        tokio::spawn(record_faults(registry.clone(), received));
        Ok(Deployments {
            runtime,
            feed: Arc::new(SharedFeed::new(client.clone(), head.clone())),
            client,
            storage,
            batch,
            head,
            metrics,
            queries: Arc::default(),
            registry,
            deployed: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
            reports,
            modules: parking_lot::Mutex::new(BTreeMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            pending: parking_lot::Mutex::new(std::collections::BTreeSet::new()),
        })
    }

    /// How many subscriptions to `$all` the host's lanes read from now.
    pub fn feed_readers(&self) -> usize {
        self.feed.readers()
    }

    /// The head of `$all` that lag is measured against.
    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    /// The queries being answered (the HTTP layer counts them), which rebuilds give way to.
    pub(crate) fn queries(&self) -> &Arc<Queries> {
        &self.queries
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
    pub fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.deployed.read().get(name).cloned()
    }

    /// Every projection's status, by name.
    pub fn statuses(&self) -> Vec<Status> {
        let deployed: Vec<_> = self.deployed.read().values().cloned().collect();
        deployed.iter().map(|d| self.status(d)).collect()
    }

    /// `deployment`'s status, with lag measured now.
    pub fn status(&self, deployment: &Deployment) -> Status {
        let entry = self.registry.get(&deployment.name);
        let (serving_lane, candidate) = deployment.both();
        let serving = serving_lane.status();
        let lag = self.head.lag(serving.checkpoint);
        let limits_set = entry.as_ref().map(|e| e.limits).unwrap_or_default();
        let sandbox = sandbox_limits(limits_set, self.runtime.limits());
        Status {
            name: deployment.name.clone(),
            serving,
            // The read model this host answers queries from (the registry may
            // already name a newer one that another host promoted).
            read_model: serving_lane.readmodel.clone(),
            lag_events: lag.events,
            lag_seconds: lag.seconds,
            on_error: entry.as_ref().map(|e| e.on_error).unwrap_or_default(),
            limits: EffectiveLimits {
                memory_mb: (sandbox.memory_bytes >> 20) as u64,
                batch_timeout_ms: sandbox.batch_deadline.as_millis() as u64,
                document_bytes: sandbox.document_bytes as u64,
                batch_write_bytes: sandbox.batch_write_bytes as u64,
            },
            limits_set,
            module: entry.as_ref().and_then(|e| self.modules.lock().get(&e.serving.module).cloned()),
            previous: entry.and_then(|e| e.previous).map(|p| Previous { version: p.version, read_model: p.readmodel }),
            rebuild: candidate.map(|c| self.rebuild_status(&c)),
        }
    }

    /// Starts every projection the registry records, in the state it was in,
    /// at its checkpoint. Modules load from the artifact cache when it holds them.
    pub async fn restore(self: &Arc<Self>) -> anyhow::Result<()> {
        // This host's lock only: restoring records nothing but faults, and
        // compiling every module must not hold the other hosts' changes up.
        let _change = self.changes.lock().await;
        for (name, mut entry) in self.registry.entries() {
            let serving_module = match self.stored_module(&entry.serving.module).await {
                Ok(module) => Some(module),
                Err(e) => {
                    tracing::error!(projection = %name, error = %format!("{e:#}"), "cannot load the module; the projection is faulted");
                    // Recorded like any fault, so `retry` can try it again.
                    let fault = FaultInfo::plain(format!("the stored module cannot be loaded: {e:#}"));
                    entry = self.change(&name, |e| {
                        e.serving.state = RunState::Faulted;
                        e.serving.fault = Some(fault);
                        e.clone()
                    })?;
                    None
                }
            };
            let deployment = Deployment::new(&name, Lane::open(&self.storage, &name, &entry.serving)?);
            self.deployed.write().insert(name.clone(), deployment.clone());
            if let (RunState::Running, Some(module)) = (entry.serving.state, serving_module) {
                self.start_lane(&name, &deployment.serving(), module, &entry)?;
            }
            if let Some(record) = &entry.candidate {
                let module = self.stored_module(&record.module).await?;
                let lane = Lane::open(&self.storage, &name, record)?;
                deployment.lanes.write().candidate = Some(lane.clone());
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
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        for deployment in self.deployed.read().values() {
            let (serving, candidate) = deployment.both();
            serving.abort();
            if let Some(candidate) = candidate {
                candidate.abort();
            }
        }
    }

    /// Compiles `bytes` on a blocking thread (loading them from the artifact cache when it can).
    pub async fn compile(&self, bytes: Arc<Vec<u8>>) -> Result<Module, ChangeError> {
        let runtime = self.runtime.clone();
        let (compiled, info) = tokio::task::spawn_blocking(move || {
            let info = ModuleInfo {
                sha256: crate::registry::module_hash(&bytes),
                bytes: bytes.len() as u64,
                toolchain: crate::runtime::toolchain(&bytes),
            };
            (runtime.compile(&bytes), info)
        })
        .await
        .map_err(|e| anyhow::anyhow!("the compile thread failed: {e}"))?;
        let module = compiled?;
        self.modules.lock().insert(info.sha256.clone(), info);
        Ok(module)
    }

    async fn stored_module(&self, sha: &str) -> anyhow::Result<Module> {
        let bytes = Arc::new(self.registry.module_bytes(sha)?);
        self.compile(bytes).await.map_err(|e| anyhow::anyhow!("stored module {sha} no longer loads: {e}"))
    }

    /// The deployment and its registry entry as they are now.
    fn entry(&self, name: &str) -> Result<(Arc<Deployment>, Entry), ChangeError> {
        match (self.get(name), self.registry.get(name)) {
            (Some(deployment), Some(entry)) => Ok((deployment, entry)),
            _ => Err(ChangeError::Unknown(name.to_owned())),
        }
    }

    /// Changes `name`'s registry entry in place (see [`Registry::change`]).
    fn change<R>(&self, name: &str, change: impl FnOnce(&mut Entry) -> R) -> Result<R, ChangeError> {
        self.registry.change(name, change)?.ok_or_else(|| ChangeError::Unknown(name.to_owned()))
    }

    /// Starts `lane`'s runner with `module` from its read model's checkpoint,
    /// under `settings`' policy and limits.
    fn start_lane(&self, name: &str, lane: &Arc<Lane>, module: Module, settings: &Entry) -> anyhow::Result<()> {
        self.start_runner(name, lane, module, settings.on_error, settings.limits)?;
        if let Some(record) = settings.lanes().find(|record| record.readmodel == lane.readmodel) {
            *lane.running.lock() = Some((record.module.clone(), settings.on_error, settings.limits));
            self.publish_module(lane, &record.module);
        }
        Ok(())
    }

    /// The shared database's view of this host, when it shares one.
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.storage.cluster()
    }

    fn start_runner(
        &self,
        name: &str,
        lane: &Arc<Lane>,
        module: Module,
        on_error: OnError,
        limits: ProjectionLimits,
    ) -> anyhow::Result<()> {
        // One runner per lane: a start racing another (the keeper taking a
        // lane while a `retry` starts it) or a hand-over, or finding one
        // running, does nothing.
        let Some(_claim) = lane.claim() else { return Ok(()) };
        if lane.runs_here() || !self.hold_lease(lane)? {
            return Ok(());
        }
        let limits = sandbox_limits(limits, self.runtime.limits());
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
            on_error,
            feed: self.feed.clone(),
            background: false,
            db: lane.db.clone(),
            status: lane.status.clone(),
            metrics: self.metrics.clone(),
            queries: self.queries.clone(),
            reports: self.reports.clone(),
            batch: self.batch,
            checkpoint,
            stale: false,
            in_flight: None,
            plain_until: None,
        };
        *lane.started.lock() = (Instant::now(), checkpoint.map_or(0, |c| c.events));
        let background = lane.background.load(std::sync::atomic::Ordering::Relaxed);
        let handle = if background { runner.spawn_in_background()? } else { runner.spawn() };
        *lane.runner.lock() = Some(handle);
        Ok(())
    }
}

/// Held while a deployment change is made: one change at a time on this
/// host and, with several hosts, across all of them.
pub(super) struct ChangeGuard<'a> {
    _shared: Option<crate::cluster::SharedLock>,
    _local: tokio::sync::MutexGuard<'a, ()>,
}

impl Deployments {
    /// Takes the change lock: the one shared by every host first (so a host
    /// waiting for it holds nothing its keeper needs meanwhile), then this host's.
    pub(super) async fn change_lock(&self) -> anyhow::Result<ChangeGuard<'_>> {
        let Some(cluster) = self.storage.cluster() else {
            return Ok(ChangeGuard { _shared: None, _local: self.changes.lock().await });
        };
        let shared = cluster.change_lock().await?;
        let guard = ChangeGuard { _shared: Some(shared), _local: self.changes.lock().await };
        // Decide on the registry as it is now, with what other hosts changed
        // applied here first (the lock keeps it so until the change is made).
        let changed = self.registry.refresh()?;
        self.pending.lock().extend(changed);
        let names: Vec<String> = std::mem::take(&mut *self.pending.lock()).into_iter().collect();
        for name in names {
            if let Err(e) = self.reconcile(&name).await {
                tracing::warn!(projection = %name, error = %format!("{e:#}"), "cannot apply a change made on another host; trying again");
                self.pending.lock().insert(name);
            }
        }
        Ok(guard)
    }

    /// With several hosts: shows the others which module `lane`'s runner here runs now.
    fn publish_module(&self, lane: &Lane, module: &str) {
        let (Some(cluster), Some(epoch), Some(id)) =
            (self.storage.cluster(), *lane.lease.lock(), lane.db.readmodel_id())
        else {
            return;
        };
        if let Err(e) = cluster.pg.block_on(cluster.publish_module(id, epoch, module)) {
            tracing::warn!(readmodel = %lane.readmodel, error = %format!("{e:#}"), "cannot publish the module this host runs");
        }
    }

    /// With several hosts, when another host runs `lane`: waits until it
    /// runs `module` (a swap asked of this host answers once it applies).
    async fn wait_applied(&self, lane: &Lane, module: &str) -> anyhow::Result<()> {
        let (Some(cluster), Some(id)) = (self.storage.cluster(), lane.db.readmodel_id()) else { return Ok(()) };
        if lane.runs_here() {
            return Ok(());
        }
        if !cluster.applied(id, module, std::time::Duration::from_secs(10)).await? {
            tracing::warn!(readmodel = %lane.readmodel, "the host running it has not applied the change within 10 s");
        }
        Ok(())
    }

    /// With several hosts: takes `lane`'s lease for this host unless it holds
    /// it already; `false` when another host holds a valid one (that host
    /// runs it). Always `true` for a host of its own.
    fn hold_lease(&self, lane: &Lane) -> anyhow::Result<bool> {
        let Some(cluster) = self.storage.cluster() else { return Ok(true) };
        if lane.lease.lock().is_some() {
            lane.status.send_if_modified(|s| {
                let shown = s.host.as_deref() == Some(cluster.host_id.as_str());
                s.host = Some(cluster.host_id.clone());
                !shown
            });
            return Ok(true);
        }
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            // Shutting down: its leases are given up, none is taken again.
            return Ok(false);
        }
        let id = lane.db.readmodel_id().context("a shared read model has a row id")?;
        let Some(epoch) = cluster.pg.block_on(cluster.take(id))? else { return Ok(false) };
        *lane.lease.lock() = Some(epoch);
        lane.db.set_fence(Some(epoch));
        lane.status.send_modify(|s| s.host = Some(cluster.host_id.clone()));
        tracing::info!(readmodel = %lane.readmodel, epoch, "lease taken");
        Ok(true)
    }
}

/// Records each runner's fault on its lane's registry entry, in place, then
/// lets the runner show it. A lane that is no longer serving or a candidate
/// (replaced while its last batch ran) has nothing to record.
async fn record_faults(registry: Arc<Registry>, mut reports: mpsc::UnboundedReceiver<FaultReport>) {
    while let Some(report) = reports.recv().await {
        let FaultReport { name, readmodel, fault, recorded } = report;
        let change = registry.change(&name, |entry| {
            if let Some(lane) = entry.lane_mut(&readmodel) {
                lane.state = RunState::Faulted;
                lane.fault = Some(fault);
            }
        });
        if let Err(e) = change {
            // Shown but not kept (a full disk): after a restart the module
            // runs from its checkpoint and meets the same event again.
            tracing::error!(projection = %name, error = %format!("{e:#}"), "cannot record the fault in the registry");
        }
        let _ = recorded.send(());
    }
}
