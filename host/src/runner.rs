//! The runner: follows `$all` for one read model, feeds batches to its
//! module, and commits each batch's documents with its checkpoint.
//!
//! Events arrive through a filtered catch-up subscription that starts after
//! the stored checkpoint; they are grouped into batches (up to `max_batch`
//! events or `max_wait`, whichever comes first), run on a blocking thread
//! (Wasm never runs on the async threads), and committed in one SQLite
//! transaction with the position of the batch's last event.
//!
//! Between two batches the runner listens for control messages: a `continue`
//! swap installs new code and resubscribes from the checkpoint (events read
//! ahead under the old filter are read again, so none is skipped or applied
//! twice); a stop returns after the batch in flight has committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::projections::{FaultInfo, LaneStatus, State};
use crate::readmodel::{Checkpoint, DeadLetter, ReadModelDb};
use crate::registry::{OnError, Registry, RunState};
use crate::runtime::{Description, Event, Fault, Instance, Limits, Module, Runtime, Writes};

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

/// What the owner of a runner can ask of it between two batches.
pub(crate) enum Control {
    /// Run `module` (already instantiated as `instance`) from the checkpoint on.
    Swap { module: Module, instance: Box<Instance>, on_error: OnError, limits: Limits, reply: oneshot::Sender<()> },
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
    pub(crate) client: eventstore::Client,
    pub(crate) db: Arc<ReadModelDb>,
    pub(crate) status: watch::Sender<LaneStatus>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) batch: BatchConfig,
    /// Where the read model is; `None` before its first batch.
    pub(crate) checkpoint: Option<Checkpoint>,
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

    /// Starts following events on a thread of its own at low CPU priority
    /// (nice 10), with its own single-threaded async runtime: a rebuild beside
    /// a serving version. Its subscription decoding, Wasm and commits all run
    /// there (blocking threads inherit the nice value), so when the CPU is
    /// short the serving version's queries go first. Linux keeps a nice value
    /// per thread; raising it needs no privilege.
    pub(crate) fn spawn_in_background(self) -> std::io::Result<RunnerHandle> {
        let (control, commands) = mpsc::channel(4);
        self.status.send_modify(|s| {
            s.state = State::CatchingUp;
            s.fault = None;
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (handle, task) = std::sync::mpsc::channel();
        let name = self.name.clone();
        std::thread::Builder::new().name("rebuild".into()).spawn(move || {
            if !lower_this_threads_priority(BACKGROUND_NICE) {
                tracing::warn!(projection = %name, "cannot lower the rebuild's CPU priority; it competes with queries");
            }
            let (finished, ended) = oneshot::channel::<()>();
            let joined = runtime.spawn(async move {
                let _finished = finished;
                self.run(commands).await;
            });
            if handle.send(joined).is_ok() {
                let _ = runtime.block_on(ended);
            }
        })?;
        let task = task.recv().map_err(|_| std::io::Error::other("the rebuild thread ended at start"))?;
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
                Exit::Faulted | Exit::Closed | Exit::Broken(_) => return,
            }
        }
    }

    fn handle(&mut self, command: Option<Control>) -> Exit {
        match command {
            Some(Control::Swap { module, instance, on_error, limits, reply }) => {
                let version = module.description().version.clone();
                self.module = module;
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

    fn filter(&self) -> SubscriptionFilter {
        let d = self.description();
        if !d.stream_prefixes.is_empty() {
            d.stream_prefixes.iter().fold(SubscriptionFilter::on_stream_name(), |f, p| f.add_prefix(p))
        } else if !d.event_type_prefixes.is_empty() {
            d.event_type_prefixes.iter().fold(SubscriptionFilter::on_event_type(), |f, p| f.add_prefix(p))
        } else {
            SubscriptionFilter::on_event_type().exclude_system_events()
        }
    }

    /// Follows `$all` from the checkpoint until told otherwise, a fault, or a broken subscription.
    ///
    /// A feeder task reads the subscription and forms the next batch while
    /// this one runs and commits; the channel between them holds at most
    /// `PIPELINE_DEPTH` batches, so a slow module slows the reading down
    /// instead of buffering events without bound.
    async fn follow(&mut self, commands: &mut mpsc::Receiver<Control>) -> Exit {
        let start = match self.checkpoint {
            Some(c) => StreamPosition::Position(eventstore::Position { commit: c.position, prepare: c.position }),
            None => StreamPosition::Start,
        };
        let options = SubscribeToAllOptions::default().position(start).filter(self.filter());
        let subscription = self.client.subscribe_to_all(&options).await;
        let (batches, mut next) = mpsc::channel(PIPELINE_DEPTH);
        let feeder = tokio::spawn(feed(subscription, self.description().clone(), self.batch, batches));
        let _feeder = AbortOnDrop(feeder);
        loop {
            let batch = tokio::select! {
                biased;
                command = commands.recv() => return self.handle(command),
                batch = next.recv() => batch,
            };
            let Some(batch) = batch else { return Exit::Broken(anyhow::anyhow!("the subscription ended")) };
            let Batch { events, position, caught_up } = match batch {
                Ok(batch) => batch,
                Err(e) => return Exit::Broken(e),
            };
            if let Some(position) = position.filter(|&p| self.checkpoint.is_none_or(|c| p > c.position)) {
                match self.apply(events, position).await {
                    Ok(()) => {}
                    Err(Failure::Fault(fault)) => {
                        self.fault(fault);
                        return Exit::Faulted;
                    }
                    Err(Failure::Storage(e)) => {
                        // Part of the batch may have been committed (events
                        // applied one at a time): go on from what is stored.
                        if let Err(fault) = self.reload_checkpoint().await {
                            self.fault(fault);
                            return Exit::Faulted;
                        }
                        return Exit::Broken(e.context("cannot write the read model"));
                    }
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
                    self.build_indexes().await;
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

    /// Creates the module's declared indexes (those missing) once the read
    /// model has caught up: one sorted build over the documents is far
    /// cheaper than keeping the indexes up to date through a catch-up's
    /// million random inserts. Until then filtered queries scan. A failure
    /// leaves the projection running without the index (queries stay correct).
    async fn build_indexes(&self) {
        let indexes = self.description().indexes.clone();
        if indexes.is_empty() {
            return;
        }
        let db = self.db.clone();
        let started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            indexes.iter().try_for_each(|(collection, field)| db.create_index(collection, field))
        })
        .await;
        match built {
            Ok(Ok(())) => {
                tracing::debug!(projection = %self.name, elapsed = ?started.elapsed(), "declared indexes in place")
            }
            Ok(Err(e)) => {
                tracing::error!(projection = %self.name, error = %format!("{e:#}"), "cannot create a declared index")
            }
            Err(e) => tracing::error!(projection = %self.name, error = %e, "index creation panicked"),
        }
    }

    fn fault(&self, fault: FaultInfo) {
        self.metrics.faulted(&self.name);
        tracing::error!(projection = %self.name, reason = %fault.reason, "projection faulted");
        let recorded = fault.clone();
        if let Err(e) = self.registry.update(&self.name, |entry| {
            if let Some(lane) = entry.lane_mut(&self.readmodel) {
                lane.state = RunState::Faulted;
                lane.fault = Some(recorded);
            }
        }) {
            tracing::error!(projection = %self.name, error = %format!("{e:#}"), "cannot record the fault in the registry");
        }
        self.status.send_modify(|s| {
            s.state = State::Faulted;
            s.fault = Some(fault);
        });
    }

    /// Reads the checkpoint and the dead-letter count back from the read model.
    async fn reload_checkpoint(&mut self) -> Result<(), FaultInfo> {
        let db = self.db.clone();
        let stored =
            tokio::task::spawn_blocking(move || Ok::<_, anyhow::Error>((db.checkpoint()?, db.dead_letter_count()?)))
                .await
                .map_err(|e| plain_fault(format!("the checkpoint thread failed: {e}")))?;
        let (checkpoint, dead_letters) =
            stored.map_err(|e| plain_fault(format!("cannot read the checkpoint after a failed write: {e:#}")))?;
        self.checkpoint = checkpoint;
        self.status.send_modify(|s| {
            s.checkpoint = checkpoint.map(|c| c.position);
            s.events_processed = checkpoint.map_or(0, |c| c.events);
            s.dead_letters = dead_letters;
        });
        Ok(())
    }

    /// Runs and commits one batch on a blocking thread. On a fault nothing of
    /// the batch is kept, unless the policy is `skip`: then the batch is run
    /// again one event at a time, and the events that fail become dead letters.
    async fn apply(&mut self, events: Vec<Event>, position: u64) -> Result<(), Failure> {
        let Some(instance) = self.instance.take() else {
            return Err(plain_fault("the module instance was lost after an earlier failure".into()).into());
        };
        let mut job = Job {
            instance,
            runtime: self.runtime.clone(),
            module: self.module.clone(),
            limits: self.limits,
            db: self.db.clone(),
            on_error: self.on_error,
            start: self.checkpoint.unwrap_or_default(),
            module_time: Duration::ZERO,
        };
        let metrics = self.metrics.clone();
        let name = self.name.clone();
        let work = move || {
            let started = Instant::now();
            let outcome = job.run(&events, position);
            if outcome.is_ok() {
                let mut types: HashMap<String, u64> = HashMap::new();
                for event in &events {
                    *types.entry(event.event_type.clone()).or_default() += 1;
                }
                metrics.batch_committed(&name, &types, job.module_time, started.elapsed() - job.module_time);
            }
            (job.instance, outcome)
        };
        let ran = tokio::task::spawn_blocking(work).await.map_err(|e| e.to_string());
        let (instance, outcome) = ran.map_err(|e| plain_fault(format!("the batch thread failed: {e}")))?;
        self.instance = Some(instance);
        let (checkpoint, skipped) = outcome?;
        self.checkpoint = Some(checkpoint);
        self.status.send_modify(|s| {
            s.checkpoint = Some(checkpoint.position);
            s.events_processed = checkpoint.events;
            s.dead_letters += skipped;
        });
        Ok(())
    }
}

/// The nice value of a rebuild's threads.
const BACKGROUND_NICE: libc::c_int = 10;

/// Sets the calling thread's nice value (Linux: per thread; threads it starts inherit it).
#[allow(unsafe_code)]
fn lower_this_threads_priority(nice: libc::c_int) -> bool {
    // SAFETY: plain system calls with no pointers; `gettid` names the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) == 0 }
}

/// One batch's work on the blocking thread.
struct Job {
    instance: Instance,
    runtime: Arc<Runtime>,
    module: Module,
    limits: Limits,
    db: Arc<ReadModelDb>,
    on_error: OnError,
    start: Checkpoint,
    /// Time spent in the module (the rest of the batch is commits).
    module_time: Duration,
}

impl Job {
    /// Applies `events` (ending at `position`); returns the new checkpoint and the number of events skipped.
    fn run(&mut self, events: &[Event], position: u64) -> Result<(Checkpoint, u64), Failure> {
        let checkpoint = Checkpoint { position, events: self.start.events + events.len() as u64 };
        let result = self.handle(events);
        match result {
            Ok(writes) => {
                self.db.commit(&writes, checkpoint).map_err(Failure::Storage)?;
                Ok((checkpoint, 0))
            }
            Err(fault) => {
                self.recover(&fault)?;
                match self.on_error {
                    OnError::Fault if matches!(fault, Fault::Guest { .. }) || events.len() == 1 => {
                        Err(fault_info(fault, events).into())
                    }
                    // A trap names no event: find the one it comes from.
                    OnError::Fault => self.until_failure(events, checkpoint),
                    OnError::Skip => self.one_by_one(events, checkpoint),
                }
            }
        }
    }

    fn handle(&mut self, events: &[Event]) -> Result<Writes, Fault> {
        if events.is_empty() {
            return Ok(Writes::new());
        }
        let started = Instant::now();
        let result = self.instance.handle_batch(events, self.db.clone());
        self.module_time += started.elapsed();
        result
    }

    /// After a trap the instance must not be used again: start a fresh one.
    fn recover(&mut self, fault: &Fault) -> Result<(), FaultInfo> {
        if !matches!(fault, Fault::Guest { .. }) {
            self.instance = self
                .runtime
                .instantiate_with(&self.module, self.limits)
                .map_err(|f| plain_fault(format!("cannot start the module again after a fault: {f}")))?;
        }
        Ok(())
    }

    /// After a trap in a batch: applies the events one at a time, each in
    /// its own transaction, until one fails, and faults naming that one (the
    /// checkpoint ends just before it). Should each succeed alone (a batch
    /// that was only too slow as a whole), the batch is done.
    fn until_failure(&mut self, events: &[Event], end: Checkpoint) -> Result<(Checkpoint, u64), Failure> {
        let mut checkpoint = self.start;
        for event in events {
            checkpoint = Checkpoint { position: event.commit_position, events: checkpoint.events + 1 };
            match self.handle(std::slice::from_ref(event)) {
                Ok(writes) => self.db.commit(&writes, checkpoint).map_err(Failure::Storage)?,
                Err(fault) => {
                    self.recover(&fault)?;
                    return Err(fault_info(fault, std::slice::from_ref(event)).into());
                }
            }
        }
        if end.position > checkpoint.position {
            self.db.commit(&Writes::new(), end).map_err(Failure::Storage)?;
        }
        Ok((end, 0))
    }

    /// Applies each event in its own transaction; failures become dead letters.
    fn one_by_one(&mut self, events: &[Event], end: Checkpoint) -> Result<(Checkpoint, u64), Failure> {
        let mut checkpoint = self.start;
        let mut skipped = 0;
        for event in events {
            checkpoint = Checkpoint { position: event.commit_position, events: checkpoint.events + 1 };
            match self.handle(std::slice::from_ref(event)) {
                Ok(writes) => self.db.commit(&writes, checkpoint).map_err(Failure::Storage)?,
                Err(fault) => {
                    self.recover(&fault)?;
                    let letter = DeadLetter {
                        position: event.commit_position,
                        stream: event.stream_id.clone(),
                        revision: event.stream_revision,
                        event_type: event.event_type.clone(),
                        error: match fault {
                            Fault::Guest { message, .. } => message,
                            other => other.to_string(),
                        },
                    };
                    tracing::warn!(stream = %letter.stream, position = letter.position, error = %letter.error, "event skipped");
                    self.db.commit_dead_letter(&letter, checkpoint).map_err(Failure::Storage)?;
                    skipped += 1;
                }
            }
        }
        if end.position > checkpoint.position {
            self.db.commit(&Writes::new(), end).map_err(Failure::Storage)?;
        }
        Ok((end, skipped))
    }
}

/// Why a batch was not applied.
enum Failure {
    /// The module failed on it: the projection faults.
    Fault(FaultInfo),
    /// Its documents could not be committed (a full disk, an I/O error):
    /// nothing of it is kept, and it is tried again after a pause.
    Storage(anyhow::Error),
}

impl From<FaultInfo> for Failure {
    fn from(fault: FaultInfo) -> Self {
        Failure::Fault(fault)
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
        // A trap while applying a single event is that event's.
        _ if events.len() == 1 => events.first(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_thread_runs_at_the_background_nice_value() {
        let nice = std::thread::spawn(|| {
            assert!(lower_this_threads_priority(BACKGROUND_NICE), "setpriority failed");
            #[allow(unsafe_code)]
            // SAFETY: a plain system call about the calling thread.
            unsafe {
                libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
            }
        })
        .join()
        .expect("thread");
        assert_eq!(nice, BACKGROUND_NICE);
    }
}
