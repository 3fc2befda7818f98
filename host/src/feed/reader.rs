//! A reader: one subscription to `$all`, decoded once into a ring of recent
//! events that any number of lanes read from, each at its own cursor.
//!
//! The ring is complete after its `floor`: it holds every event (system
//! events aside) with a position past the floor, up to the reader's head.
//! A lane whose cursor is at or past the floor can therefore take its next
//! events from the ring without missing or repeating one.
//!
//! Two kinds of reader differ only in what happens when the ring is full:
//! the live reader (fed by the host's head tracker) never waits and drops
//! its oldest events, so a lane that fell that far behind finds its cursor
//! under the floor and leaves for a read of its own; a catch-up reader
//! waits for its slowest member, but at most `HOLD_MAX`, then drops events
//! all the same, so one slow lane holds the others back once and briefly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventstore::{StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::runtime::Event;

/// The longest a catch-up reader waits for a slow member before it drops
/// events that member has not read yet.
pub(crate) const HOLD_MAX: Duration = Duration::from_secs(1);

/// A reader wakes its members every this many events, and at once when
/// one of them has nothing to hand out: waking every member on every event
/// costs more than the read itself at catch-up rates, and grows with the
/// lanes at the head (a lane filling a batch needs to look again only when
/// it may be full, or at its deadline).
const ANNOUNCE_EVERY: usize = 64;

/// How much a ring holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

impl Bounds {
    /// The live reader's: a few seconds of a busy store (a lane further
    /// behind than that reads on its own until it is this near again).
    pub(crate) const LIVE: Bounds = Bounds { events: 8 * 1024, bytes: 8 << 20 };
    /// A shared catch-up reader's: enough for its members to work on while it reads ahead.
    pub(crate) const CATCH_UP: Bounds = Bounds { events: 8 * 1024, bytes: 16 << 20 };
    /// A reader of one lane's: a few batches ahead.
    pub(crate) const ALONE: Bounds = Bounds { events: 2 * 1024, bytes: 4 << 20 };
}

/// What a reader has read, as its members see it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    /// The position of the last event in the ring (`None`: none read yet).
    pub(crate) head: Option<u64>,
    /// Whether the subscription has reached the head of `$all`.
    pub(crate) caught_up: bool,
    /// Why the subscription is down, while it is.
    pub(crate) problem: Option<String>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
    /// Every event past this position is here (`None`: from the start of `$all`).
    floor: Option<u64>,
    /// How far the subscription has read: the last event, or a later
    /// position the server reported after filtering events out.
    reached: Option<u64>,
    /// Events pushed since the members were last woken.
    unannounced: usize,
}

impl Ring {
    fn has_room(&self, bytes: usize, bounds: Bounds) -> bool {
        self.events.len() < bounds.events && self.bytes + bytes <= bounds.bytes
    }

    fn evict_front(&mut self) {
        if let Some(gone) = self.events.pop_front() {
            self.bytes -= size(&gone);
            self.floor = Some(gone.commit_position);
        }
    }
}

fn size(event: &Event) -> usize {
    event.data.len() + event.metadata.len() + event.stream_id.len() + event.event_type.len() + 96
}

/// One read of `$all`, shared by its members.
#[derive(Debug)]
pub(crate) struct Reader {
    pub(crate) id: u64,
    /// The live reader (fed by the head tracker) rather than a catch-up one.
    pub(crate) live: bool,
    /// Whether it runs at low priority (a rebuild's); catch-up readers are
    /// shared only within one priority.
    pub(crate) background: bool,
    /// A reader serving one lane may read with that lane's own filter; it
    /// is then not complete and no other lane may join it.
    pub(crate) complete: bool,
    bounds: Bounds,
    ring: Mutex<Ring>,
    progress: watch::Sender<Progress>,
    /// The members' cursors (`0`: before the first event), for a catch-up
    /// reader to know what it may drop.
    cursors: Mutex<Vec<Arc<AtomicU64>>>,
    /// Woken when a member moves on, for a catch-up reader waiting for room.
    moved: Notify,
    /// Members waiting with nothing to hand out: each event wakes them.
    hungry: AtomicUsize,
}

/// A member counted as hungry while it holds this.
pub(crate) struct Hungry<'a>(&'a AtomicUsize);

impl Drop for Hungry<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Reader {
    pub(crate) fn new(id: u64, live: bool, background: bool, complete: bool, from: Option<u64>) -> Reader {
        let bounds = match (live, complete) {
            (true, _) => Bounds::LIVE,
            (false, true) => Bounds::CATCH_UP,
            (false, false) => Bounds::ALONE,
        };
        let (progress, _) = watch::channel(Progress { head: from, ..Progress::default() });
        Reader {
            id,
            live,
            background,
            complete,
            bounds,
            ring: Mutex::new(Ring { floor: from, reached: from, ..Ring::default() }),
            progress,
            cursors: Mutex::new(Vec::new()),
            moved: Notify::new(),
            hungry: AtomicUsize::new(0),
        }
    }

    /// Whether the ring holds every event after `cursor` (or will, once read).
    pub(crate) fn covers(&self, cursor: Option<u64>) -> bool {
        match self.ring.lock().floor {
            None => true,
            Some(floor) => cursor.is_some_and(|c| c >= floor),
        }
    }

    pub(crate) fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub(crate) fn head(&self) -> Option<u64> {
        self.progress.borrow().head
    }

    /// The members the ring still serves (a member under the floor leaves at its next batch).
    pub(crate) fn members(&self) -> usize {
        let floor = self.ring.lock().floor;
        self.cursors.lock().iter().filter(|c| floor.is_none_or(|f| c.load(Ordering::Acquire) >= f)).count()
    }

    /// Registers a member at `cursor`; the member leaves by dropping the cursor via [`Reader::leave`].
    pub(crate) fn enter(&self, cursor: Option<u64>) -> Arc<AtomicU64> {
        let cursor = Arc::new(AtomicU64::new(cursor.unwrap_or(0)));
        self.cursors.lock().push(cursor.clone());
        cursor
    }

    pub(crate) fn leave(&self, cursor: &Arc<AtomicU64>) {
        self.cursors.lock().retain(|c| !Arc::ptr_eq(c, cursor));
        self.moved.notify_one();
    }

    /// Counts a member as having nothing to hand out until the guard is
    /// dropped: every event wakes it, not every `ANNOUNCE_EVERY`. Take it
    /// before looking at the ring, so that an event pushed after the look
    /// wakes the member.
    pub(crate) fn hungry(&self) -> Hungry<'_> {
        self.hungry.fetch_add(1, Ordering::SeqCst);
        Hungry(&self.hungry)
    }

    /// A member moved its cursor on.
    pub(crate) fn moved(&self) {
        self.moved.notify_one();
    }

    /// Up to `max` events after `cursor`, in order, or `None` when the ring
    /// no longer holds every event after it (the member fell behind the floor).
    pub(crate) fn after(&self, cursor: Option<u64>, max: usize) -> Option<Slice> {
        let ring = self.ring.lock();
        if let Some(floor) = ring.floor {
            if cursor.is_none_or(|c| c < floor) {
                return None;
            }
        }
        let first = cursor.map_or(0, |c| ring.events.partition_point(|e| e.commit_position <= c));
        let events: Vec<_> = ring.events.range(first..).take(max).cloned().collect();
        let at_end = first + events.len() == ring.events.len();
        let reached = if at_end { ring.reached.filter(|&r| cursor.is_none_or(|c| r > c)) } else { None };
        Some(Slice { events, reached, at_end })
    }

    /// Adds a decoded event, making room first (see the module's notes).
    pub(crate) async fn push(&self, event: Event) {
        let event = Arc::new(event);
        let bytes = size(&event);
        if !self.live && !self.ring.lock().has_room(bytes, self.bounds) {
            self.wait_for_room(bytes).await;
        }
        let position = event.commit_position;
        let announce = {
            let mut ring = self.ring.lock();
            while !ring.events.is_empty() && !ring.has_room(bytes, self.bounds) {
                ring.evict_front();
            }
            ring.bytes += bytes;
            ring.events.push_back(event);
            ring.reached = Some(position);
            ring.unannounced += 1;
            let announce = ring.unannounced >= ANNOUNCE_EVERY || self.hungry.load(Ordering::SeqCst) > 0;
            if announce {
                ring.unannounced = 0;
            }
            announce
        };
        // The head is always up to date (a new subscription starts after
        // it); the members are woken as `announce` says.
        self.progress.send_if_modified(|p| {
            p.head = Some(position);
            p.problem.take().is_some() || announce
        });
    }

    /// The subscription has read up to `position` without an event for the ring.
    pub(crate) fn advance(&self, position: u64) {
        {
            let mut ring = self.ring.lock();
            if ring.reached.is_some_and(|r| r >= position) {
                return;
            }
            ring.reached = Some(position);
        }
        self.progress.send_modify(|p| {
            p.head = Some(position);
            p.problem = None;
        });
    }

    /// Drops the events every member has read; while the ring stays full,
    /// waits for the slowest member to move: at most `HOLD_MAX` when it
    /// holds others back, as long as it takes when it is the only one.
    async fn wait_for_room(&self, bytes: usize) {
        let deadline = tokio::time::Instant::now() + HOLD_MAX;
        loop {
            let moved = self.moved.notified();
            let alone = {
                // Members already under the floor hold nothing back: they
                // choose another reader at their next batch.
                let floor = self.ring.lock().floor;
                let cursors = self.cursors.lock();
                let served =
                    cursors.iter().map(|c| c.load(Ordering::Acquire)).filter(|&c| floor.is_none_or(|f| c >= f));
                let (slowest, count) =
                    served.fold((None, 0), |(min, n), c| (Some(min.map_or(c, |m: u64| m.min(c))), n + 1));
                drop(cursors);
                let mut ring = self.ring.lock();
                while ring.events.front().is_some_and(|e| slowest.is_none_or(|s| e.commit_position <= s)) {
                    ring.evict_front();
                }
                if ring.has_room(bytes, self.bounds) || ring.events.is_empty() {
                    return;
                }
                count <= 1
            };
            if alone {
                moved.await;
            } else if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn caught_up(&self) {
        self.progress.send_if_modified(|p| !std::mem::replace(&mut p.caught_up, true) || p.problem.take().is_some());
    }

    /// The subscription answers again.
    pub(crate) fn healthy(&self) {
        self.progress.send_if_modified(|p| p.problem.take().is_some());
    }

    pub(crate) fn broken(&self, problem: String) {
        self.progress.send_modify(|p| p.problem = Some(problem));
    }
}

/// Events from a ring, and how far the subscription had read when they end
/// at the ring's end (a position past the last of them, if the server
/// reported one after filtering events out).
pub(crate) struct Slice {
    pub(crate) events: Vec<Arc<Event>>,
    pub(crate) reached: Option<u64>,
    /// Whether the events end at the ring's end.
    pub(crate) at_end: bool,
}

/// The host's copy of a recorded event, made once per reader.
pub(crate) fn to_event(recorded: &eventstore::RecordedEvent) -> Event {
    Event {
        stream_id: recorded.stream_id.clone(),
        event_type: recorded.event_type.clone(),
        event_id: recorded.id.to_string(),
        stream_revision: recorded.revision,
        commit_position: recorded.position.commit,
        created_ms: recorded.created.timestamp_millis(),
        content_type: if recorded.is_json { "application/json".into() } else { "application/octet-stream".into() },
        data: recorded.data.to_vec(),
        metadata: recorded.custom_metadata.to_vec(),
    }
}

/// Reads `$all` after `from` with `filter` into `reader`, resubscribing
/// after its head when the subscription breaks, until the task is dropped.
pub(crate) async fn read(client: eventstore::Client, reader: Arc<Reader>, filter: SubscriptionFilter) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let start = match reader.head() {
            Some(commit) => StreamPosition::Position(eventstore::Position { commit, prepare: commit }),
            None => StreamPosition::Start,
        };
        let options = SubscribeToAllOptions::default().position(start).filter(filter.clone());
        let mut subscription = client.subscribe_to_all(&options).await;
        loop {
            match subscription.next_subscription_event().await {
                Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                    reader.push(to_event(resolved.get_original_event())).await;
                    backoff = Duration::from_millis(100);
                }
                Ok(SubscriptionEvent::Checkpoint(position)) => reader.advance(position.commit),
                Ok(SubscriptionEvent::CaughtUp) => reader.caught_up(),
                Ok(_) => reader.healthy(),
                Err(e) => {
                    tracing::warn!(reader = reader.id, error = %e, ?backoff, "a read of $all broke; resubscribing");
                    reader.broken(e.to_string());
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64) -> Event {
        Event {
            stream_id: "s".into(),
            event_type: "T".into(),
            event_id: String::new(),
            stream_revision: 0,
            commit_position: position,
            created_ms: 0,
            content_type: "application/json".into(),
            data: b"{}".to_vec(),
            metadata: Vec::new(),
        }
    }

    fn positions(slice: &Slice) -> Vec<u64> {
        slice.events.iter().map(|e| e.commit_position).collect()
    }

    #[tokio::test]
    async fn a_member_reads_exactly_the_events_after_its_cursor() {
        let reader = Reader::new(1, true, false, true, None);
        for p in [10, 20, 30, 40] {
            reader.push(event(p)).await;
        }
        assert_eq!(positions(&reader.after(None, 10).expect("covered")), [10, 20, 30, 40]);
        assert_eq!(positions(&reader.after(Some(20), 10).expect("covered")), [30, 40]);
        assert_eq!(positions(&reader.after(Some(25), 1).expect("covered")), [30]);
        assert!(reader.after(Some(40), 10).expect("covered").events.is_empty());
        assert_eq!(reader.head(), Some(40));
        // A server checkpoint past the last event moves a member at the end on.
        reader.advance(55);
        assert_eq!(reader.after(Some(40), 10).expect("covered").reached, Some(55));
        assert_eq!(reader.after(Some(30), 10).expect("covered").reached, Some(55));
        assert_eq!(reader.after(Some(20), 1).expect("covered").reached, None, "not at the end");
    }

    #[tokio::test]
    async fn the_live_ring_drops_its_oldest_and_a_cursor_under_the_floor_is_not_covered() {
        let reader = Reader::new(1, true, false, true, None);
        let cursor = reader.enter(Some(0));
        for p in 1..=(Bounds::LIVE.events as u64 + 2) {
            reader.push(event(p)).await;
        }
        // The live reader never waited for its member at 0: the first two are gone.
        assert!(!reader.covers(None));
        assert!(!reader.covers(Some(1)));
        assert!(reader.covers(Some(2)));
        assert!(reader.after(Some(1), 1).is_none());
        assert_eq!(positions(&reader.after(Some(2), 1).expect("covered")), [3]);
        reader.leave(&cursor);
    }

    #[tokio::test]
    async fn a_catch_up_ring_waits_for_its_slowest_member_then_drops_its_events() {
        let reader = Arc::new(Reader::new(1, false, false, true, Some(0)));
        let slow = reader.enter(Some(0));
        let fast = reader.enter(Some(0));
        for p in 1..=(Bounds::CATCH_UP.events as u64) {
            reader.push(event(p)).await;
        }
        fast.store(Bounds::CATCH_UP.events as u64, Ordering::Release);
        slow.store(5, Ordering::Release);
        // Room for five once the slow member has read them, and only those go.
        for p in 0..5 {
            reader.push(event(Bounds::CATCH_UP.events as u64 + 1 + p)).await;
        }
        assert!(reader.covers(Some(5)));
        // The next one waits for the slow member (at most HOLD_MAX), then drops what it has not read.
        reader.push(event(Bounds::CATCH_UP.events as u64 + 6)).await;
        assert!(!reader.covers(Some(5)), "the slow member was left behind");
        assert!(reader.covers(Some(6)));
    }
}
