//! One consumer group at work: a task that owns every piece of the group's
//! state, reads its source ahead of its consumers, hands each event to one
//! consumer with room, and moves the checkpoint past what is done.
//!
//! Nothing here is shared: consumers, acks, timeouts and management calls
//! all arrive as messages in the task's inbox, so the state needs no lock
//! and every decision sees the whole group.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use super::consumers::{Consumer, Consumers};
use super::info::GroupInfo;
use super::source::{Item, Position, Reader};
use super::{Dropped, GroupKey, Settings};
use crate::storage::Store;

/// A consumer's number within the server.
pub(crate) type ConsumerId = u64;

/// What a consumer's stream receives.
#[derive(Debug)]
pub(crate) enum Delivery {
    Event { item: Arc<Item>, retry_count: u32 },
    Dropped(Dropped),
}

/// What a consumer said of events it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nack {
    Park,
    Retry,
    Skip,
    Stop,
}

/// A consumer joining, as the gRPC front describes it.
#[derive(Debug)]
pub(crate) struct Joining {
    pub(crate) id: ConsumerId,
    pub(crate) buffer_size: u32,
    pub(crate) from: String,
    pub(crate) username: String,
    pub(crate) tx: mpsc::UnboundedSender<Delivery>,
}

/// The group task's inbox.
#[derive(Debug)]
pub(crate) enum Msg {
    Join(Joining, oneshot::Sender<Result<(), u32>>),
    Leave(ConsumerId),
    Ack(ConsumerId, Vec<Uuid>),
    Nack(ConsumerId, Vec<Uuid>, Nack),
    Info(oneshot::Sender<GroupInfo>),
    ReplayParked(Option<u64>, oneshot::Sender<Result<(), String>>),
    Stop(Dropped, oneshot::Sender<()>),
}

struct Entry {
    item: Arc<Item>,
    retries: u32,
    /// Its place in the source's order; `None` for a parked event replayed.
    order: Option<u64>,
    holder: Option<ConsumerId>,
    deadline: Option<Instant>,
}

/// The group task's state.
pub(crate) struct Group {
    key: GroupKey,
    settings: Settings,
    store: Arc<Store>,
    reader: Reader,
    at_end: bool,
    entries: HashMap<Uuid, Entry>,
    fresh: VecDeque<Uuid>,
    retry: VecDeque<Uuid>,
    deadlines: BTreeSet<(Instant, Uuid)>,
    /// Source events read and not yet below the checkpoint, oldest first: their position and whether done.
    order: VecDeque<(Position, bool)>,
    order_base: u64,
    order_next: u64,
    processed: Option<Position>,
    checkpointed: Option<Position>,
    done_since_checkpoint: u32,
    checkpoint_due: Instant,
    consumers: Consumers,
    delivered: u64,
    measured: (Instant, u64),
    parked: u64,
    replaying: bool,
}

impl Group {
    pub(crate) fn new(key: GroupKey, settings: Settings, store: Arc<Store>, reader: Reader, parked: u64) -> Group {
        let checkpointed = reader.resumed_after();
        Group {
            key,
            store,
            reader,
            at_end: false,
            entries: HashMap::new(),
            fresh: VecDeque::new(),
            retry: VecDeque::new(),
            deadlines: BTreeSet::new(),
            order: VecDeque::new(),
            order_base: 0,
            order_next: 0,
            processed: checkpointed,
            checkpointed,
            done_since_checkpoint: 0,
            checkpoint_due: Instant::now() + Duration::from_millis(settings.checkpoint_after_ms.into()),
            consumers: Consumers::default(),
            delivered: 0,
            measured: (Instant::now(), 0),
            parked,
            replaying: false,
            settings,
        }
    }

    /// Runs until stopped, or until every handle to the inbox is gone.
    pub(crate) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Msg>) {
        let mut head = self.store.watch_head();
        loop {
            self.fill().await;
            self.expire().await;
            self.dispatch();
            self.checkpoint(false).await;
            let wake = self.next_wake();
            // More to read and room for it (a read stops early only at the source's end, but
            // costs nothing to be sure of): go round again, after whatever messages wait.
            let read_on = !self.at_end && self.room() > 0;
            tokio::select! {
                biased;
                msg = inbox.recv() => {
                    let mut next = msg;
                    loop {
                        match next {
                            None => return self.finish(Dropped::ShuttingDown).await,
                            Some(Msg::Stop(reason, reply)) => {
                                self.finish(reason).await;
                                let _ = reply.send(());
                                return;
                            }
                            Some(msg) => self.handle(msg).await,
                        }
                        // Acks come in bursts: take what is waiting before the next round.
                        match inbox.try_recv() {
                            Ok(msg) => next = Some(msg),
                            Err(_) => break,
                        }
                    }
                }
                changed = head.changed(), if self.at_end => {
                    if changed.is_ok() {
                        self.at_end = false;
                    }
                }
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                () = std::future::ready(()), if read_on => {}
            }
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Join(joining, reply) => {
                let limit = self.settings.max_subscriber_count;
                if limit > 0 && self.consumers.len() as u32 >= limit {
                    let _ = reply.send(Err(limit));
                    return;
                }
                self.consumers.add(joining);
                let _ = reply.send(Ok(()));
            }
            Msg::Leave(id) => self.leave(id),
            Msg::Ack(id, ids) => {
                for event in ids {
                    if self.release(id, &event) {
                        self.count(id, |c| c.acked += 1);
                        self.done(&event);
                    }
                }
            }
            Msg::Nack(id, ids, action) => {
                if action == Nack::Stop {
                    // EventStoreDB stops the subscription: every consumer is dropped, the group stays.
                    for consumer in self.consumers.take_all() {
                        let _ = consumer.join.tx.send(Delivery::Dropped(Dropped::Stopped));
                        self.requeue_held_by(consumer.join.id);
                    }
                    return;
                }
                for event in ids {
                    if !self.release(id, &event) {
                        continue;
                    }
                    self.count(id, |c| c.nacked += 1);
                    match action {
                        Nack::Skip => self.done(&event),
                        Nack::Park => self.park(&event).await,
                        Nack::Retry | Nack::Stop => self.retry_or_park(event).await,
                    }
                }
            }
            Msg::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Msg::ReplayParked(stop_at, reply) => {
                let _ = reply.send(self.replay_parked(stop_at).await);
            }
            Msg::Stop(..) => unreachable!("handled by the loop"),
        }
    }

    /// Reads the source while there is room ahead of the consumers.
    async fn fill(&mut self) {
        let room = self.room();
        if self.at_end || room == 0 {
            return;
        }
        match self.reader.read(room, self.settings.read_batch_size as usize).await {
            Ok((items, at_end)) => {
                self.at_end = at_end;
                for item in items {
                    let id = item.ack_id();
                    if self.entries.contains_key(&id) {
                        // A replayed parked event that the source reached again: deliver it once.
                        continue;
                    }
                    let order = self.order_next;
                    self.order_next += 1;
                    self.order.push_back((item.position, false));
                    self.entries.insert(id, Entry { item: Arc::new(item), retries: 0, order: Some(order), holder: None, deadline: None });
                    self.fresh.push_back(id);
                }
            }
            Err(e) => {
                tracing::warn!(group = %self.key, error = %e, "persistent subscription cannot read its source");
                self.at_end = true;
            }
        }
    }

    /// How many more events the group may read ahead of its consumers.
    fn room(&self) -> usize {
        let ahead = if self.reader.is_live() { self.settings.live_buffer_size } else { self.settings.history_buffer_size };
        (ahead as usize).saturating_sub(self.fresh.len())
    }

    /// Hands retries, then fresh events, to consumers with room, in order,
    /// until the next event has nowhere to go.
    fn dispatch(&mut self) {
        loop {
            let (queue_is_retry, id) = match (self.retry.front(), self.fresh.front()) {
                (Some(id), _) => (true, *id),
                (None, Some(id)) => (false, *id),
                (None, None) => return,
            };
            let Some(entry) = self.entries.get(&id) else {
                // Done while it waited (a replay acked through its first delivery).
                if queue_is_retry { self.retry.pop_front(); } else { self.fresh.pop_front(); }
                continue;
            };
            let item = entry.item.clone();
            let Some(index) = self.consumers.choose(self.settings.strategy, &item) else { return };
            if queue_is_retry { self.retry.pop_front(); } else { self.fresh.pop_front(); }
            let consumer = self.consumers.at(index);
            let entry = self.entries.get_mut(&id).expect("looked up above");
            let delivery = Delivery::Event { item: entry.item.clone(), retry_count: entry.retries };
            if consumer.join.tx.send(delivery).is_err() {
                let gone = consumer.join.id;
                self.retry.push_front(id);
                self.leave(gone);
                continue;
            }
            consumer.in_flight += 1;
            consumer.delivered += 1;
            self.delivered += 1;
            entry.holder = Some(consumer.join.id);
            if self.settings.message_timeout_ms > 0 {
                let deadline = Instant::now() + Duration::from_millis(self.settings.message_timeout_ms.into());
                entry.deadline = Some(deadline);
                self.deadlines.insert((deadline, id));
            }
        }
    }

    /// Takes `event` back from consumer `id`; false when it does not hold it
    /// (acked twice, timed out meanwhile, or never given to it).
    fn release(&mut self, id: ConsumerId, event: &Uuid) -> bool {
        let Some(entry) = self.entries.get_mut(event) else { return false };
        if entry.holder != Some(id) {
            return false;
        }
        entry.holder = None;
        if let Some(deadline) = entry.deadline.take() {
            self.deadlines.remove(&(deadline, *event));
        }
        self.count(id, |c| c.in_flight -= 1);
        true
    }

    fn count(&mut self, id: ConsumerId, f: impl FnOnce(&mut Consumer)) {
        if let Some(consumer) = self.consumers.find(id) {
            f(consumer);
        }
    }

    /// The event is finished with: acked, skipped or parked.
    fn done(&mut self, event: &Uuid) {
        let Some(entry) = self.entries.remove(event) else { return };
        let Some(order) = entry.order else { return };
        if let Some(slot) = self.order.get_mut((order - self.order_base) as usize) {
            slot.1 = true;
        }
        while let Some(&(position, true)) = self.order.front() {
            self.order.pop_front();
            self.order_base += 1;
            self.processed = Some(position);
            self.done_since_checkpoint += 1;
        }
    }

    async fn retry_or_park(&mut self, event: Uuid) {
        let Some(entry) = self.entries.get_mut(&event) else { return };
        if entry.retries >= self.settings.max_retry_count {
            self.park(&event).await;
        } else {
            entry.retries += 1;
            self.retry.push_back(event);
        }
    }

    async fn park(&mut self, event: &Uuid) {
        let Some(entry) = self.entries.get(event) else { return };
        match super::source::park(&self.store, &self.key, &entry.item).await {
            Ok(()) => {
                self.parked += 1;
                self.done(event);
            }
            Err(e) => {
                // Not parked, so not done: it stays for another try rather than being lost.
                tracing::warn!(group = %self.key, error = %e, "cannot park an event; retrying it");
                self.retry.push_back(*event);
            }
        }
    }

    /// Retries (or parks) every event whose consumer did not answer in time.
    async fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, event)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let Some(holder) = self.entries.get(&event).and_then(|e| e.holder) else {
                self.deadlines.pop_first();
                continue;
            };
            self.release(holder, &event);
            self.retry_or_park(event).await;
        }
    }

    fn leave(&mut self, id: ConsumerId) {
        if self.consumers.remove(id) {
            self.requeue_held_by(id);
        }
    }

    /// Events a departed consumer held go back to the front, in their order.
    fn requeue_held_by(&mut self, id: ConsumerId) {
        let mut held: Vec<(Option<u64>, Uuid)> =
            self.entries.iter().filter(|(_, e)| e.holder == Some(id)).map(|(k, e)| (e.order, *k)).collect();
        held.sort();
        for (_, event) in held.into_iter().rev() {
            let entry = self.entries.get_mut(&event).expect("listed above");
            entry.holder = None;
            entry.retries += 1;
            if let Some(deadline) = entry.deadline.take() {
                self.deadlines.remove(&(deadline, event));
            }
            self.retry.push_front(event);
        }
    }

    /// Writes the checkpoint when enough is done and it is due, or at once
    /// when `force` (stopping) or the upper bound is reached.
    async fn checkpoint(&mut self, force: bool) {
        if self.processed == self.checkpointed || self.processed.is_none() {
            return;
        }
        let due = self.done_since_checkpoint >= self.settings.max_checkpoint_count
            || (self.done_since_checkpoint >= self.settings.min_checkpoint_count && Instant::now() >= self.checkpoint_due);
        if !(due || force) {
            return;
        }
        let position = self.processed.expect("checked above");
        match super::source::write_checkpoint(&self.store, &self.key, position).await {
            Ok(()) => {
                self.checkpointed = Some(position);
                self.done_since_checkpoint = 0;
                self.checkpoint_due = Instant::now() + Duration::from_millis(self.settings.checkpoint_after_ms.into());
            }
            Err(e) => tracing::warn!(group = %self.key, error = %e, "cannot write a checkpoint"),
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let timeout = self.deadlines.first().map(|(deadline, _)| *deadline);
        let checkpoint = (self.processed != self.checkpointed
            && self.done_since_checkpoint >= self.settings.min_checkpoint_count)
            .then_some(self.checkpoint_due);
        timeout.into_iter().chain(checkpoint).min()
    }

    async fn replay_parked(&mut self, stop_at: Option<u64>) -> Result<(), String> {
        self.replaying = true;
        let parked = super::source::take_parked(&self.store, &self.key, stop_at).await;
        self.replaying = false;
        let items = parked?;
        self.parked = self.parked.saturating_sub(items.len() as u64);
        for item in items {
            let id = item.ack_id();
            if self.entries.contains_key(&id) {
                continue;
            }
            self.entries.insert(id, Entry { item: Arc::new(item), retries: 0, order: None, holder: None, deadline: None });
            self.retry.push_back(id);
        }
        Ok(())
    }

    fn info(&mut self) -> GroupInfo {
        let now = Instant::now();
        let seconds = now.duration_since(self.measured.0).as_secs_f64().max(0.001);
        let since = self.delivered - self.measured.1;
        self.measured = (now, self.delivered);
        let in_flight = self.consumers.in_flight();
        let connections = self.consumers.describe(seconds, self.settings.extra_statistics);
        let live = self.reader.is_live();
        let status = if self.replaying {
            "ReplayingParkedMessages"
        } else if live && self.at_end {
            "Live"
        } else {
            "Behind"
        };
        GroupInfo {
            key: self.key.clone(),
            settings: self.settings.clone(),
            status,
            connections,
            average_per_second: (since as f64 / seconds) as i32,
            total_items: self.delivered,
            count_since_last_measurement: since,
            last_checkpointed: self.checkpointed,
            last_known: self.reader.last_known(),
            read_buffer_count: if live { 0 } else { self.fresh.len() },
            live_buffer_count: if live { self.fresh.len() } else { 0 },
            retry_buffer_count: self.retry.len(),
            in_flight,
            parked: self.parked,
        }
    }

    async fn finish(&mut self, reason: Dropped) {
        self.checkpoint(true).await;
        for consumer in self.consumers.take_all() {
            let _ = consumer.join.tx.send(Delivery::Dropped(reason));
        }
    }
}
