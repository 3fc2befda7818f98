//! The runner: follows `$all` for one read model, feeds batches to its
//! module, and commits each batch's documents with its checkpoint.
//!
//! Events arrive through the lane's feed (`feed.rs`: a filtered catch-up
//! subscription from the stored checkpoint, read into batches of up to
//! `max_batch` events or `max_wait`); each batch runs on a blocking thread
//! (Wasm never runs on the async threads) and commits in one SQLite
//! transaction with the position of its last event (`batch.rs`).
//!
//! Between two batches the runner listens for control messages: a `continue`
//! swap installs new code and resubscribes from the checkpoint (events read
//! ahead under the old filter are read again, so none is skipped or applied
//! twice); a stop returns after the batch in flight has committed.
//!
//! A runner owns no deployment state: it publishes its lane's progress on a
//! watch channel and reports a fault to the deployments (the one writer of
//! the registry), waiting until it is recorded before it shows `faulted`.

mod background;
pub(crate) use background::Queries;
mod batch;
mod feed;
mod pipeline;
pub(crate) use pipeline::InFlight;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::readmodel::{Checkpoint, ReadModelDb};
use crate::runtime::{Description, Instance, Limits, Module, Runtime};
use crate::settings::OnError;
use crate::status::{FaultInfo, LaneStatus, State};
use batch::Failure;

/// How events are grouped into batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most events per batch.
    pub max_batch: usize,
    /// Longest a batch waits to fill once it has an event.
    pub max_wait: Duration,
}

/// How often at most a lane stores a checkpoint that moved over events it
/// does not want only.
const LAZY_CHECKPOINT: Duration = Duration::from_millis(250);

fn is_fenced(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::readmodel::Fenced>().is_some()
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_batch: 512, max_wait: Duration::from_millis(10) }
    }
}

/// What the owner of a runner can ask of it between two batches.
pub(crate) enum Control {
    /// Run `module` (already instantiated as `instance`) from the checkpoint on.
    Swap { module: Box<Module>, instance: Box<Instance>, on_error: OnError, limits: Limits, reply: oneshot::Sender<()> },
    /// Stop after the batch in flight.
    Stop { reply: oneshot::Sender<()> },
    /// Stop after the batch in flight without reporting `stopped`: another
    /// runner takes over the same read model at once.
    Handover { reply: oneshot::Sender<()> },
}

/// Everything a runner needs; `spawn` starts it.
pub(crate) struct Runner {
    /// The deployment name (for logs and metrics).
    pub(crate) name: String,
    /// The read model's name in the registry.
    pub(crate) readmodel: String,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) module: Module,
    /// The module instance; lent to a blocking thread while a batch runs.
    pub(crate) instance: Option<Instance>,
    pub(crate) limits: Limits,
    pub(crate) on_error: OnError,
    /// The host's reads of `$all`, which the lane takes its events from.
    pub(crate) feed: Arc<crate::feed::SharedFeed>,
    /// Whether it runs at low priority (a rebuild's); set by `spawn_in_background`.
    pub(crate) background: bool,
    /// The queries being answered, which a rebuild gives way to.
    pub(crate) queries: Arc<Queries>,
    pub(crate) db: Arc<ReadModelDb>,
    pub(crate) status: watch::Sender<LaneStatus>,
    pub(crate) metrics: Arc<Metrics>,
    /// Where faults are reported, to be recorded before they are shown.
    pub(crate) reports: mpsc::UnboundedSender<FaultReport>,
    pub(crate) batch: BatchConfig,
    /// Where the read model is; `None` before its first batch.
    pub(crate) checkpoint: Option<Checkpoint>,
    /// Set when a write failed: the checkpoint is read back from the read
    /// model before following again.
    pub(crate) stale: bool,
    /// The batch being committed while the next one runs (`pipeline.rs`).
    pub(crate) in_flight: Option<InFlight>,
    /// Run the plain way until the checkpoint reaches this position (a
    /// commit in flight there was refused as unstorable).
    pub(crate) plain_until: Option<u64>,
}

/// A runner's fault, for the owner of deployment state to record. The
/// runner waits for `recorded` before it shows the fault on its status, so
/// whatever the API reports as faulted is already in the registry.
#[derive(Debug)]
pub(crate) struct FaultReport {
    /// The deployment name.
    pub(crate) name: String,
    /// The read model whose runner faulted.
    pub(crate) readmodel: String,
    pub(crate) fault: FaultInfo,
    /// Answered once the fault is recorded (or can never be).
    pub(crate) recorded: oneshot::Sender<()>,
}

/// A running runner, as its owner holds it.
pub(crate) struct RunnerHandle {
    pub(crate) control: mpsc::Sender<Control>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

enum Exit {
    /// Asked to stop; reply once stopped.
    Stop(oneshot::Sender<()>),
    /// Asked to hand over; reply once stopped, state unchanged.
    Handover(oneshot::Sender<()>),
    /// New code installed: follow again from the checkpoint.
    Resubscribe,
    /// The module faulted; the runner is done.
    Faulted,
    /// The subscription broke or the read model could not be written:
    /// follow again from the committed checkpoint after a pause.
    Broken(anyhow::Error),
    /// The owner is gone.
    Closed,
    /// Another host holds the lane now (its commit was fenced off): the runner is done.
    Fenced,
}

impl Runner {
    /// Starts following events on a task of its own.
    pub(crate) fn spawn(self) -> RunnerHandle {
        let (control, commands) = mpsc::channel(4);
        self.status.send_modify(|s| {
            s.state = State::CatchingUp;
            s.fault = None;
        });
        RunnerHandle { control, task: tokio::spawn(self.run(commands)) }
    }

    /// Starts following events at low CPU priority on a thread of its own
    /// (`background.rs`): a rebuild beside a serving version.
    pub(crate) fn spawn_in_background(mut self) -> std::io::Result<RunnerHandle> {
        self.background = true;
        let (control, commands) = mpsc::channel(4);
        self.status.send_modify(|s| {
            s.state = State::CatchingUp;
            s.fault = None;
        });
        let name = self.name.clone();
        let task = background::spawn_at_low_priority(&name, self.run(commands))?;
        Ok(RunnerHandle { control, task })
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Control>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let exit = match self.follow(&mut commands).await {
                Exit::Broken(e) => {
                    let problem = format!("{e:#}");
                    tracing::warn!(projection = %self.name, error = %problem, ?backoff, "held up; retrying");
                    self.status.send_modify(|s| {
                        s.state = State::Retrying;
                        s.problem = Some(problem);
                    });
                    // Commands are still taken while waiting to resubscribe.
                    let command = tokio::select! {
                        () = tokio::time::sleep(backoff) => None,
                        command = commands.recv() => Some(command),
                    };
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match command {
                        Some(command) => self.handle(command),
                        None => continue,
                    }
                }
                exit => exit,
            };
            match exit {
                Exit::Stop(reply) => {
                    self.status.send_modify(|s| s.state = State::Stopped);
                    let _ = reply.send(());
                    return;
                }
                Exit::Handover(reply) => {
                    let _ = reply.send(());
                    return;
                }
                Exit::Resubscribe => backoff = Duration::from_millis(100),
                Exit::Faulted | Exit::Closed | Exit::Fenced | Exit::Broken(_) => return,
            }
        }
    }

    fn handle(&mut self, command: Option<Control>) -> Exit {
        match command {
            Some(Control::Swap { module, instance, on_error, limits, reply }) => {
                let version = module.description().version.clone();
                self.module = *module;
                self.instance = Some(*instance);
                self.on_error = on_error;
                self.limits = limits;
                self.status.send_modify(|s| s.version = version);
                let _ = reply.send(());
                tracing::info!(projection = %self.name, "new code installed at the checkpoint");
                Exit::Resubscribe
            }
            Some(Control::Stop { reply }) => Exit::Stop(reply),
            Some(Control::Handover { reply }) => Exit::Handover(reply),
            None => Exit::Closed,
        }
    }

    fn description(&self) -> &Description {
        self.module.description()
    }

    /// Follows `$all` from the checkpoint until told otherwise, a fault, or
    /// a broken subscription; returns once the batch in flight has landed.
    async fn follow(&mut self, commands: &mut mpsc::Receiver<Control>) -> Exit {
        let exit = self.follow_events(commands).await;
        if let Err(e) = self.settle().await {
            self.unstored(&e);
        }
        exit
    }

    async fn follow_events(&mut self, commands: &mut mpsc::Receiver<Control>) -> Exit {
        if self.stale {
            if let Err(fault) = self.reload_checkpoint().await {
                return Exit::Broken(anyhow::anyhow!(fault.reason));
            }
            self.stale = false;
        }
        let cursor = self.checkpoint.map(|c| c.position);
        let mut feed = feed::Feed::new(self.feed.clone(), cursor, self.description(), self.batch, self.background);
        // Where the lane is past its committed checkpoint over events it
        // does not want (shown, not stored yet), and when it last committed.
        let mut passed: Option<u64> = None;
        let mut committed_at = Instant::now();
        // Since the last pause of a rebuild: its reading and applying.
        let mut working_since = Instant::now();
        loop {
            let due = tokio::time::Instant::from_std(committed_at + LAZY_CHECKPOINT);
            let batch = tokio::select! {
                biased;
                command = commands.recv() => {
                    if let Err(e) = self.settle().await {
                        self.unstored(&e);
                    } else if let Err(e) = self.store_passed(passed).await {
                        self.unstored(&e);
                    }
                    return self.handle(command);
                }
                committed = async {
                    match self.in_flight.as_mut() {
                        Some(flight) => (&mut flight.task).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let flight = self.in_flight.take().expect("a commit was in flight");
                    if let Err(e) = self.landed(flight.end, committed) {
                        return self.failed(Failure::Storage(e)).await;
                    }
                    continue;
                }
                batch = feed.next() => batch,
                () = tokio::time::sleep_until(due), if passed.is_some() => {
                    // Quiet since: store where it is, for other hosts and restarts.
                    if let Err(e) = self.store_passed(passed.take()).await {
                        self.unstored(&e);
                        return if is_fenced(&e) { self.step_down(&e) } else { Exit::Broken(e) };
                    }
                    committed_at = Instant::now();
                    continue;
                }
            };
            let feed::Batch { events, position, caught_up } = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    // The event store broke; the read model may well be there.
                    if let Err(e) = self.settle().await {
                        self.unstored(&e);
                    } else if let Err(e) = self.store_passed(passed).await {
                        self.unstored(&e);
                    }
                    return Exit::Broken(e);
                }
            };
            if let Some(position) = position.filter(|&p| self.checkpoint.is_none_or(|c| p > c.position)) {
                // A position shown must have everything before it stored.
                if events.is_empty() {
                    if let Err(e) = self.settle().await {
                        return self.failed(Failure::Storage(e)).await;
                    }
                }
                // Events it does not want change nothing: the checkpoint
                // moves on at once for queries (`at_least`), and is stored
                // at most every `LAZY_CHECKPOINT` (after a crash they are
                // read again and passed over again).
                let lazy = events.is_empty() && committed_at.elapsed() < LAZY_CHECKPOINT;
                if lazy {
                    passed = Some(position);
                    self.status.send_modify(|s| s.checkpoint = Some(position));
                } else {
                    passed = None;
                    committed_at = Instant::now();
                }
                let applied = if lazy { Ok(()) } else { self.apply(events, position).await };
                if self.background && applied.is_ok() {
                    // The work counted is the batch's reading (the store's and
                    // the client's, at normal priority) as well as its apply.
                    let pause = self.queries.pause_after(working_since.elapsed());
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    working_since = Instant::now();
                }
                if let Err(failure) = applied {
                    return self.failed(failure).await;
                }
            }
            self.status.send_if_modified(|s| {
                let recovered = s.state == State::Retrying;
                if recovered {
                    s.state = State::CatchingUp;
                    s.problem = None;
                }
                recovered
            });
            if caught_up {
                if self.status.borrow().state == State::CatchingUp {
                    // Running means caught up with everything stored.
                    if let Err(e) = self.settle().await {
                        return self.failed(Failure::Storage(e)).await;
                    }
                    self.finish_catch_up().await;
                }
                self.status.send_if_modified(|s| {
                    let change = s.state == State::CatchingUp;
                    if change {
                        s.state = State::Running;
                    }
                    change
                });
            }
        }
    }

    /// How the runner ends after a batch failed.
    async fn failed(&mut self, failure: Failure) -> Exit {
        match failure {
            Failure::Fault(fault) => {
                // Events before the failing one may have been committed one
                // at a time: show where it stopped.
                let _ = self.reload_checkpoint().await;
                self.fault(fault).await;
                Exit::Faulted
            }
            // Another host took the lane over while this batch ran: it was
            // rolled back, and this runner steps down.
            Failure::Storage(e) if is_fenced(&e) => self.step_down(&e),
            Failure::Storage(e) => {
                // Part of the batch may have been committed (events applied
                // one at a time): go on from what is stored, read again
                // before following (the database may be away now; then at
                // the next attempt).
                self.stale = true;
                Exit::Broken(e.context("cannot write the read model"))
            }
        }
    }

    /// Once the read model has caught up: creates the module's declared
    /// indexes (those missing), as one sorted build over the documents is
    /// far cheaper than keeping them up to date through a catch-up's million
    /// random inserts (until then filtered queries scan), and folds the
    /// catch-up's write-ahead log back into the database, so that its first
    /// live batches do not wait for that copy. A failure leaves the
    /// projection running without the index (queries stay correct).
    async fn finish_catch_up(&self) {
        let indexes = self.description().indexes.clone();
        let db = self.db.clone();
        let started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            indexes.iter().try_for_each(|(collection, field)| db.create_index(collection, field))?;
            db.fold_log()
        })
        .await;
        match built {
            Ok(Ok(())) => {
                tracing::debug!(projection = %self.name, elapsed = ?started.elapsed(), "declared indexes in place, log folded")
            }
            Ok(Err(e)) => {
                tracing::error!(projection = %self.name, error = %format!("{e:#}"), "cannot create a declared index")
            }
            Err(e) => tracing::error!(projection = %self.name, error = %e, "index creation panicked"),
        }
    }

    /// Reports `fault` to the owner, waits until it is recorded, then shows it.
    async fn fault(&self, fault: FaultInfo) {
        self.metrics.faulted(&self.name);
        tracing::error!(projection = %self.name, reason = %fault.reason, "projection faulted");
        let (recorded, done) = oneshot::channel();
        let report =
            FaultReport { name: self.name.clone(), readmodel: self.readmodel.clone(), fault: fault.clone(), recorded };
        if self.reports.send(report).is_ok() {
            // An error here means the owner is gone (the host is shutting down).
            let _ = done.await;
        }
        self.status.send_modify(|s| {
            s.state = State::Faulted;
            s.fault = Some(fault);
        });
    }

    /// Stores the position the lane has passed to over unwanted events, if any.
    async fn store_passed(&mut self, passed: Option<u64>) -> anyhow::Result<()> {
        let Some(position) = passed.filter(|&p| self.checkpoint.is_none_or(|c| p > c.position)) else { return Ok(()) };
        self.apply(Vec::new(), position).await.map_err(|e| match e {
            Failure::Fault(fault) => anyhow::anyhow!(fault.reason),
            Failure::Storage(e) => e,
        })
    }

    /// The lane's progress (a batch in flight, or a passed-over position)
    /// could not be stored: the status goes back to what is stored, and the
    /// checkpoint is read back before following again (the commit may have
    /// landed without its answer).
    fn unstored(&mut self, e: &anyhow::Error) {
        if !is_fenced(e) {
            tracing::warn!(projection = %self.name, error = %format!("{e:#}"), "cannot store the lane's progress; events are read again from what is stored");
        }
        self.stale = true;
        let stored = self.checkpoint.map(|c| c.position);
        self.status.send_modify(|s| s.checkpoint = stored);
    }

    /// Another host holds the lane now (a commit was fenced off): step down.
    fn step_down(&self, e: &anyhow::Error) -> Exit {
        tracing::warn!(projection = %self.name, readmodel = %self.readmodel, error = %e, "lease lost; stepping down");
        self.status.send_modify(|s| s.host = None);
        Exit::Fenced
    }

    /// Reads the checkpoint and the dead-letter count back from the read model.
    async fn reload_checkpoint(&mut self) -> Result<(), FaultInfo> {
        let db = self.db.clone();
        let stored =
            tokio::task::spawn_blocking(move || Ok::<_, anyhow::Error>((db.checkpoint()?, db.dead_letter_count()?)))
                .await
                .map_err(|e| FaultInfo::plain(format!("the checkpoint thread failed: {e}")))?;
        let (checkpoint, dead_letters) =
            stored.map_err(|e| FaultInfo::plain(format!("cannot read the checkpoint after a failed write: {e:#}")))?;
        self.checkpoint = checkpoint;
        self.status.send_modify(|s| {
            s.checkpoint = checkpoint.map(|c| c.position);
            s.events_processed = checkpoint.map_or(0, |c| c.events);
            s.dead_letters = dead_letters;
        });
        Ok(())
    }
}
