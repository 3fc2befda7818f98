//! One consumer group at work: a task that owns every piece of the group's
//! state, reads its source ahead of its consumers, hands each event to one
//! consumer with room, and moves the checkpoint past what is done.
//!
//! Nothing here is shared: consumers, acks, timeouts and management calls
//! all arrive as messages in the task's inbox, so the state needs no lock
//! and every decision sees the whole group.

mod dispatch;
mod failures;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::consumers::{Consumer, Consumers};
use super::info::GroupInfo;
use super::messages::{ConsumerId, Delivery, Msg, Nack};
use super::progress::Progress;
use super::source::{self, Item, Reader};
use super::{Dropped, GroupKey, Settings, Strategy};
use crate::storage::Store;

struct Entry {
    item: Arc<Item>,
    retries: u32,
    /// Its place in the source's order; `None` for a parked event replayed.
    order: Option<u64>,
    /// Its revision in the parked stream, for a parked event replayed.
    parked_at: Option<u64>,
    /// What a pinned strategy keeps on one consumer.
    pin: u64,
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
    progress: Progress,
    /// Events to park at the next turn of the loop (past their retries when their consumer left).
    to_park: Vec<Uuid>,
    /// The parked stream's `$tb` to write: replayed events below it are done.
    hide_parked_below: Option<u64>,
    /// An outstanding event whose id the next source event shares: reading
    /// waits until it is done, since acks name events by id alone.
    blocked_on: Option<Uuid>,
    /// Why the source cannot be read, and when to try again.
    fault: Option<(String, Instant)>,
    /// A replay of parked events under way: the parked revision to read from next, and its bound.
    replay: Option<(u64, Option<u64>)>,
    consumers: Consumers,
    delivered: u64,
    measured: (Instant, u64),
    parked: u64,
}

impl Group {
    pub(crate) fn new(key: GroupKey, settings: Settings, store: Arc<Store>, reader: Reader, parked: u64) -> Group {
        let after = Duration::from_millis(settings.checkpoint_after_ms.into());
        Group {
            key,
            store,
            progress: Progress::new(reader.resumed_after(), after),
            reader,
            at_end: false,
            entries: HashMap::new(),
            fresh: VecDeque::new(),
            retry: VecDeque::new(),
            deadlines: BTreeSet::new(),
            to_park: Vec::new(),
            hide_parked_below: None,
            blocked_on: None,
            fault: None,
            replay: None,
            consumers: Consumers::default(),
            delivered: 0,
            measured: (Instant::now(), 0),
            parked,
            settings,
        }
    }

    /// Runs until stopped, or until every handle to the inbox is gone.
    pub(crate) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Msg>) {
        let mut head = self.store.watch_head();
        loop {
            self.fill().await;
            let _ = self.replay_more().await; // logged where it fails; the replay is given up

            self.expire().await;
            self.park_waiting().await;
            self.dispatch();
            self.checkpoint(false).await;
            self.hide_replayed().await;
            let wake = self.next_wake();
            // More to read and room for it (a read of a filtered `$all` stops after a bounded
            // scan), or events to park: go round again at once, after whatever messages wait.
            let read_on = (!self.at_end && self.room() > 0 && self.blocked_on.is_none())
                || !self.to_park.is_empty()
                || (self.replay.is_some() && self.replay_room() > 0);
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
                let id = joining.id;
                self.consumers.add(joining);
                if reply.send(Ok(())).is_err() {
                    // The call was abandoned while joining: its slot must not stay taken.
                    self.leave(id);
                }
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
                    self.stop_consumers(id);
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
        if let Some(id) = self.blocked_on {
            if self.entries.contains_key(&id) {
                return;
            }
            self.blocked_on = None;
        }
        if let Some((_, retry_at)) = &self.fault {
            if Instant::now() < *retry_at {
                return;
            }
            self.at_end = false;
        }
        let room = self.room();
        if self.at_end || room == 0 {
            return;
        }
        match self.reader.read(room, self.settings.read_batch_size as usize).await {
            Ok((items, at_end)) => {
                if self.fault.take().is_some() {
                    tracing::info!(group = %self.key, "persistent subscription reads its source again");
                }
                self.at_end = at_end;
                self.take_in(items);
            }
            Err(e) => {
                // The read position has not moved; try again in a second (a regex that gives
                // up will again: the group waits, faulted, until it is updated or deleted).
                if self.fault.as_ref().is_none_or(|(known, _)| *known != e) {
                    tracing::warn!(group = %self.key, error = %e, "persistent subscription cannot read its source");
                }
                self.fault = Some((e, Instant::now() + Duration::from_secs(1)));
                self.at_end = true;
            }
        }
    }

    fn take_in(&mut self, items: Vec<Item>) {
        let by_correlation = self.settings.strategy == Strategy::PinnedByCorrelation;
        for item in items {
            let id = item.ack_id();
            if let Some(existing) = self.entries.get(&id) {
                let (a, b) = (&existing.item.event.event, &item.event.event);
                if existing.parked_at.is_some() && (a.stream.as_str(), a.revision) == (b.stream.as_str(), b.revision) {
                    // A replayed parked event that the source reached again: deliver it once.
                    let order = self.progress.read(item.position);
                    self.progress.done(order);
                    continue;
                }
                // Another event with this id is outstanding: read this one again once that is done.
                self.reader.rewind_to(item.position);
                self.at_end = false;
                self.blocked_on = Some(id);
                return;
            }
            let order = self.progress.read(item.position);
            let pin = item.pin_key(by_correlation);
            let entry = Entry {
                item: Arc::new(item),
                retries: 0,
                order: Some(order),
                parked_at: None,
                pin,
                holder: None,
                deadline: None,
            };
            self.entries.insert(id, entry);
            self.fresh.push_back(id);
        }
    }

    /// How many more events the group may read ahead of its consumers.
    fn room(&self) -> usize {
        let ahead =
            if self.reader.is_live() { self.settings.live_buffer_size } else { self.settings.history_buffer_size };
        (ahead as usize).saturating_sub(self.fresh.len())
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
        if let Some(order) = entry.order {
            self.progress.done(order);
        }
        if let Some(revision) = entry.parked_at {
            if let Some(below) = self.progress.replay_done(revision) {
                self.hide_parked_below = Some(below);
            }
        }
    }

    /// Writes the checkpoint when enough is done and it is due, or at once
    /// when `force` (stopping) or the upper bound is reached.
    async fn checkpoint(&mut self, force: bool) {
        let (min, max) = (self.settings.min_checkpoint_count, self.settings.max_checkpoint_count);
        let Some(position) = self.progress.due(min, max, force) else { return };
        let after = Duration::from_millis(self.settings.checkpoint_after_ms.into());
        match source::write_checkpoint(&self.store, &self.key, position).await {
            Ok(()) => self.progress.written(position, after),
            Err(e) => {
                tracing::warn!(group = %self.key, error = %e, "cannot write a checkpoint");
                self.progress.postpone(after.max(Duration::from_secs(1)));
            }
        }
    }

    /// Hides the replayed parked events that are done from the parked stream.
    async fn hide_replayed(&mut self) {
        let Some(below) = self.hide_parked_below else { return };
        match source::hide_parked(&self.store, &self.key, below).await {
            Ok(()) => {
                self.hide_parked_below = None;
                self.parked = source::parked_count(&self.store, &self.key).await;
            }
            Err(e) => {
                // Kept to write at the next turn; until then they stay visible, so a crash
                // replays them again rather than losing them (a replay now skips them).
                tracing::warn!(group = %self.key, error = %e, "cannot hide replayed parked events");
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let timeout = self.deadlines.first().map(|(deadline, _)| *deadline);
        let read_again = self.fault.as_ref().map(|(_, at)| *at);
        timeout.into_iter().chain(self.progress.wake(self.settings.min_checkpoint_count)).chain(read_again).min()
    }

    /// Starts a replay of the parked events below `stop_at` (a revision of the
    /// parked stream; all without it). They are read a page at a time as
    /// earlier ones are done, and stay in the parked stream until each is
    /// done, so none is lost if the group stops first.
    async fn replay_parked(&mut self, stop_at: Option<u64>) -> Result<(), String> {
        let from = self.replay.map_or(0, |(from, _)| from);
        self.replay = Some((from, stop_at));
        self.replay_more().await
    }

    /// How many more replayed events may be held: the history buffer's worth at most.
    fn replay_room(&self) -> usize {
        (self.settings.history_buffer_size as usize).saturating_sub(self.progress.replays_outstanding())
    }

    /// Takes the next page of a replay under way, while there is room for it.
    async fn replay_more(&mut self) -> Result<(), String> {
        let Some((from, stop_at)) = self.replay else { return Ok(()) };
        let room = self.replay_room().min(self.settings.read_batch_size as usize);
        if room == 0 {
            return Ok(());
        }
        let (parked, next) = match source::read_parked(&self.store, &self.key, from, stop_at, room).await {
            Ok(page) => page,
            Err(e) => {
                self.replay = None;
                tracing::warn!(group = %self.key, error = %e, "cannot read the parked events to replay");
                return Err(e);
            }
        };
        self.replay = next.map(|next| (next, stop_at));
        for (revision, item) in parked {
            let id = item.ack_id();
            if self.entries.contains_key(&id) || !self.progress.replaying(revision) {
                continue;
            }
            let pin = item.pin_key(self.settings.strategy == Strategy::PinnedByCorrelation);
            let entry = Entry {
                item: Arc::new(item),
                retries: 0,
                order: None,
                parked_at: Some(revision),
                pin,
                holder: None,
                deadline: None,
            };
            self.entries.insert(id, entry);
            self.retry.push_back(id);
        }
        Ok(())
    }

    fn info(&mut self) -> GroupInfo {
        let now = Instant::now();
        let seconds = now.duration_since(self.measured.0).as_secs_f64().max(0.001);
        let since = self.delivered - self.measured.1;
        self.measured = (now, self.delivered);
        let live = self.reader.is_live();
        GroupInfo {
            key: self.key.clone(),
            settings: self.settings.clone(),
            status: match (&self.fault, live && self.at_end) {
                (Some(_), _) => "Faulted",
                (None, true) => "Live",
                (None, false) => "Behind",
            },
            connections: self.consumers.describe(seconds, self.settings.extra_statistics),
            average_per_second: (since as f64 / seconds) as i32,
            total_items: self.delivered,
            count_since_last_measurement: since,
            last_checkpointed: self.progress.checkpointed(),
            last_known: self.reader.last_known(),
            read_buffer_count: if live { 0 } else { self.fresh.len() },
            live_buffer_count: if live { self.fresh.len() } else { 0 },
            retry_buffer_count: self.retry.len(),
            in_flight: self.consumers.in_flight(),
            parked: self.parked,
        }
    }

    async fn finish(&mut self, reason: Dropped) {
        self.park_waiting().await;
        self.checkpoint(true).await;
        self.hide_replayed().await;
        for consumer in self.consumers.take_all() {
            let _ = consumer.join.tx.send(Delivery::Dropped(reason));
        }
    }
}
