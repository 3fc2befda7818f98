//! Persistent subscriptions: consumer groups that the server keeps.
//!
//! A group reads one stream or `$all` (filtered) and hands each event to
//! one of its connected consumers, which ack or nack it. The server tracks
//! what every consumer holds: an event not acked in time, or held by a
//! consumer that leaves, goes to another; one that fails too often is parked
//! in a stream of its own, from which it can be replayed. Each group runs as
//! one task (`group.rs`); this module keeps the set of groups, their
//! configuration (one `$PersistentConfig` event in
//! `$persistentSubscriptionConfig`, as EventStoreDB keeps it) and the
//! management calls. A group's checkpoint and parked events live in streams
//! of the store too (`source.rs`), so they are exactly as durable as events.

mod consumers;
mod group;
mod info;
mod messages;
mod progress;
mod settings;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

pub(crate) use info::GroupInfo;
pub(crate) use messages::{Delivery, Nack};
pub(crate) use settings::{FilterSpec, RawSettings, Settings, Source, StartFrom, Strategy};
pub(crate) use source::{format_position, Item};

use crate::storage::{Direction, ExpectedRevision, ProposedEvent, ReadError, Store, StreamFrom};
use group::Group;
use messages::{ConsumerId, Joining, Msg};

const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";
const CONFIG_TYPE: &str = "$PersistentConfig";

/// A group's name within its source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct GroupKey {
    /// The stream name, or `$all`.
    pub(crate) source: String,
    pub(crate) group: String,
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.source, self.group)
    }
}

/// Why a consumer's subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    Deleted,
    Updated,
    /// A consumer nacked with `Stop`.
    Stopped,
    Restarted,
    ShuttingDown,
}

/// Why a call on the subsystem failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PsError {
    #[error("subscription group '{0}' already exists")]
    Exists(GroupKey),
    #[error("subscription group '{0}' does not exist")]
    NotFound(GroupKey),
    #[error("no subscription group reads '{0}'")]
    NoGroups(String),
    #[error("{0}")]
    Invalid(String),
    #[error("subscription group '{0}' already has its maximum of {1} subscribers")]
    Full(GroupKey, u32),
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Config {
    key: GroupKey,
    source: Source,
    settings: Settings,
    /// Where the group starts before its first checkpoint, fixed at creation
    /// (see `source::resolve_start`).
    start: source::Position,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConfigDocument {
    version: u32,
    groups: Vec<Config>,
}

#[derive(Debug)]
struct Running {
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    configs: BTreeMap<GroupKey, Config>,
    running: HashMap<GroupKey, Running>,
    stopped: bool,
}

/// Every consumer group of the server.
#[derive(Debug)]
pub(crate) struct Subsystem {
    store: Arc<Store>,
    state: Mutex<State>,
    next_consumer: AtomicU64,
}

/// A consumer's end of its group: events in, acks and nacks out.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) deliveries: mpsc::UnboundedReceiver<Delivery>,
    pub(crate) answers: Answers,
}

/// Sends a consumer's acks and nacks; tells the group it left when dropped.
#[derive(Debug)]
pub(crate) struct Answers {
    id: ConsumerId,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Answers {
    pub(crate) fn ack(&self, ids: Vec<Uuid>) {
        let _ = self.tx.send(Msg::Ack(self.id, ids));
    }

    pub(crate) fn nack(&self, ids: Vec<Uuid>, action: Nack) {
        let _ = self.tx.send(Msg::Nack(self.id, ids, action));
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Leave(self.id));
    }
}

impl Subsystem {
    /// Loads the groups' configuration from the store and starts every group.
    pub(crate) async fn start(store: Arc<Store>) -> Result<Arc<Subsystem>, String> {
        let configs = load_configs(&store).await?;
        let subsystem =
            Arc::new(Subsystem { store, state: Mutex::new(State::default()), next_consumer: AtomicU64::new(1) });
        {
            let mut state = subsystem.state.lock().await;
            for config in configs {
                // One group that cannot start (say, an unreadable checkpoint) must not keep the
                // server or the other groups down; a restart of the subsystem tries it again.
                match subsystem.launch(&config).await {
                    Ok(running) => {
                        state.running.insert(config.key.clone(), running);
                    }
                    Err(e) => {
                        tracing::error!(group = %config.key, error = %e, "a persistent subscription cannot start")
                    }
                }
                state.configs.insert(config.key.clone(), config);
            }
        }
        Ok(subsystem)
    }

    pub(crate) async fn create(&self, key: GroupKey, source: Source, settings: Settings) -> Result<(), PsError> {
        let mut state = self.open().await?;
        if state.configs.contains_key(&key) {
            return Err(PsError::Exists(key));
        }
        // What a deleted group of the same name left (a crash mid-delete) is not this group's.
        source::forget(&self.store, &key).await;
        let start = source::resolve_start(&self.store, &source, settings.start_from);
        let config = Config { key: key.clone(), source, settings, start };
        let running = self.launch(&config).await.map_err(PsError::Invalid)?;
        state.configs.insert(key.clone(), config);
        if let Err(e) = self.save(&state).await {
            state.configs.remove(&key);
            stop(running, Dropped::Deleted).await;
            return Err(e);
        }
        state.running.insert(key, running);
        Ok(())
    }

    /// Replaces a group's settings; its consumers are dropped and reconnect to the new group.
    pub(crate) async fn update(&self, key: GroupKey, settings: Settings) -> Result<(), PsError> {
        let mut state = self.open().await?;
        let mut config = state.configs.get(&key).cloned().ok_or_else(|| PsError::NotFound(key.clone()))?;
        if settings.start_from != config.settings.start_from {
            config.start = source::resolve_start(&self.store, &config.source, settings.start_from);
        }
        config.settings = settings;
        if let Some(running) = state.running.remove(&key) {
            stop(running, Dropped::Updated).await;
        }
        let previous = state.configs.insert(key.clone(), config);
        let saved = self.save(&state).await;
        match (&saved, previous) {
            (Err(_), Some(previous)) => {
                state.configs.insert(key.clone(), previous);
            }
            (Ok(()), _) => tracing::info!(group = %key, "persistent subscription updated"),
            (Err(_), None) => {}
        }
        let config = state.configs[&key].clone();
        let running = self.launch(&config).await.map_err(PsError::Unavailable)?;
        state.running.insert(key, running);
        saved
    }

    /// Deletes a group: its consumers are dropped, its checkpoint and parked
    /// streams deleted, so a group created later with the same name starts afresh.
    pub(crate) async fn delete(&self, key: GroupKey) -> Result<(), PsError> {
        let mut state = self.open().await?;
        let config = state.configs.remove(&key).ok_or_else(|| PsError::NotFound(key.clone()))?;
        if let Some(running) = state.running.remove(&key) {
            stop(running, Dropped::Deleted).await;
        }
        if let Err(e) = self.save(&state).await {
            // Still configured, with its checkpoint: it goes on where it was.
            state.configs.insert(key.clone(), config.clone());
            if let Ok(running) = self.launch(&config).await {
                state.running.insert(key, running);
            }
            return Err(e);
        }
        // A crash before this leaves the streams; `create` clears them.
        source::forget(&self.store, &key).await;
        Ok(())
    }

    /// A group's settings and state.
    pub(crate) async fn info(&self, key: GroupKey) -> Result<GroupInfo, PsError> {
        // A group may stop between the lookup and the question (an update or a
        // restart starts it again): ask the one running then.
        for _ in 0..3 {
            match ask(&self.sender(&key).await?, Msg::Info).await {
                Err(PsError::Unavailable(_)) => continue,
                answer => return answer,
            }
        }
        Err(PsError::Unavailable(format!("subscription group '{key}' keeps restarting")))
    }

    /// Every group, or the groups of one source (none of it is `NotFound`,
    /// as in EventStoreDB).
    pub(crate) async fn list(&self, source: Option<&str>) -> Result<Vec<GroupInfo>, PsError> {
        let keys: Vec<GroupKey> = {
            let state = self.open().await?;
            state.running.keys().filter(|key| source.is_none_or(|s| key.source == s)).cloned().collect()
        };
        let mut infos = Vec::with_capacity(keys.len());
        for key in keys {
            match self.info(key).await {
                Ok(info) => infos.push(info),
                Err(PsError::NotFound(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        if let (Some(source), true) = (source, infos.is_empty()) {
            return Err(PsError::NoGroups(source.to_owned()));
        }
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }

    pub(crate) async fn replay_parked(&self, key: GroupKey, stop_at: Option<u64>) -> Result<(), PsError> {
        let tx = self.sender(&key).await?;
        ask(&tx, |reply| Msg::ReplayParked(stop_at, reply)).await?.map_err(PsError::Unavailable)
    }

    /// Stops every group (dropping their consumers) and starts them again
    /// from their checkpoints.
    pub(crate) async fn restart(&self) -> Result<(), PsError> {
        let mut state = self.open().await?;
        for (_, running) in state.running.drain() {
            stop(running, Dropped::Restarted).await;
        }
        let configs: Vec<Config> = state.configs.values().cloned().collect();
        let mut failed = None;
        for config in configs {
            // One group that cannot start must not keep the others down.
            match self.launch(&config).await {
                Ok(running) => {
                    state.running.insert(config.key.clone(), running);
                }
                Err(e) => {
                    tracing::error!(group = %config.key, error = %e, "a persistent subscription cannot start");
                    failed.get_or_insert(PsError::Unavailable(format!("group '{}' cannot start: {e}", config.key)));
                }
            }
        }
        tracing::info!(groups = state.running.len(), "persistent subscriptions restarted");
        failed.map_or(Ok(()), Err)
    }

    /// Stops every group, writing each one's checkpoint; later calls fail.
    pub(crate) async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        state.stopped = true;
        for (_, running) in state.running.drain() {
            stop(running, Dropped::ShuttingDown).await;
        }
    }

    /// Connects a consumer with room for `buffer_size` unacked events.
    pub(crate) async fn join(
        &self,
        key: GroupKey,
        buffer_size: u32,
        from: String,
        username: String,
    ) -> Result<Consumer, PsError> {
        if buffer_size == 0 {
            return Err(PsError::Invalid("buffer size must be greater than 0".into()));
        }
        let tx = self.sender(&key).await?;
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let (events, deliveries) = mpsc::unbounded_channel();
        let joining = Joining { id, buffer_size, from, username, tx: events };
        match ask(&tx, |reply| Msg::Join(joining, reply)).await? {
            Ok(()) => Ok(Consumer { deliveries, answers: Answers { id, tx } }),
            Err(limit) => Err(PsError::Full(key, limit)),
        }
    }

    async fn open(&self) -> Result<tokio::sync::MutexGuard<'_, State>, PsError> {
        let state = self.state.lock().await;
        if state.stopped {
            return Err(PsError::Unavailable("the server is shutting down".into()));
        }
        Ok(state)
    }

    async fn sender(&self, key: &GroupKey) -> Result<mpsc::UnboundedSender<Msg>, PsError> {
        let state = self.open().await?;
        state.running.get(key).map(|r| r.tx.clone()).ok_or_else(|| PsError::NotFound(key.clone()))
    }

    async fn launch(&self, config: &Config) -> Result<Running, String> {
        let settings = &config.settings;
        let reader =
            source::Reader::open(&self.store, &config.key, &config.source, config.start, settings.resolve_links)
                .await?;
        let parked = source::parked_count(&self.store, &config.key).await;
        let group = Group::new(config.key.clone(), settings.clone(), self.store.clone(), reader, parked);
        let (tx, inbox) = mpsc::unbounded_channel();
        let task = tokio::spawn(group.run(inbox));
        Ok(Running { tx, task })
    }

    async fn save(&self, state: &State) -> Result<(), PsError> {
        let document = ConfigDocument { version: 1, groups: state.configs.values().cloned().collect() };
        let data = serde_json::to_vec(&document).map_err(|e| PsError::Unavailable(e.to_string()))?;
        let event = ProposedEvent {
            id: Uuid::new_v4(),
            event_type: CONFIG_TYPE.into(),
            content_type: "application/json".into(),
            metadata: bytes::Bytes::new(),
            data: data.into(),
        };
        self.store
            .append(CONFIG_STREAM, ExpectedRevision::Any, vec![event])
            .await
            .map(|_| ())
            .map_err(|e| PsError::Unavailable(format!("cannot save the subscription configuration: {e}")))
    }
}

async fn stop(running: Running, reason: Dropped) {
    let (reply, stopped) = oneshot::channel();
    if running.tx.send(Msg::Stop(reason, reply)).is_ok() {
        let _ = stopped.await;
    }
    let _ = running.task.await;
}

async fn ask<T>(tx: &mpsc::UnboundedSender<Msg>, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, PsError> {
    let (reply, answer) = oneshot::channel();
    let gone = || PsError::Unavailable("the subscription group has stopped".into());
    tx.send(msg(reply)).map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

async fn load_configs(store: &Arc<Store>) -> Result<Vec<Config>, String> {
    let store = store.clone();
    let last =
        tokio::task::spawn_blocking(move || store.read_stream(CONFIG_STREAM, StreamFrom::End, Direction::Backwards, 1))
            .await
            .map_err(|e| e.to_string())?;
    let page = match last {
        Ok(page) => page,
        Err(ReadError::NotFound | ReadError::Deleted) => return Ok(Vec::new()),
        Err(ReadError::Io(e)) => return Err(format!("cannot read the persistent subscription configuration: {e}")),
    };
    let Some(event) = page.events.first() else { return Ok(Vec::new()) };
    let document: ConfigDocument = serde_json::from_slice(&event.event.data)
        .map_err(|e| format!("the persistent subscription configuration in {CONFIG_STREAM} is unreadable: {e}"))?;
    Ok(document.groups)
}
