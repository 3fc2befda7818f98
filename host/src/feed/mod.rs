//! The host's reads of `$all`, shared by its lanes.
//!
//! Every event the store holds is read and decoded by as few subscriptions
//! as the lanes' positions allow, not once per lane: the lanes at or near
//! the head all read from the live reader (the head tracker's subscription,
//! which follows `$all` anyway for lag), and lanes catching up from about
//! the same place share a catch-up reader. Each reader keeps its recent
//! events in a ring (`reader.rs`); a lane takes its batches from the ring
//! at its own cursor and still commits its own checkpoint, so exactly-once
//! per lane is what it was with a subscription each.
//!
//! A lane chooses its reader when it starts and again between two batches
//! (never inside one, so a switch neither skips nor repeats an event), by
//! these rules, in order:
//! 1. the live reader, once its ring holds every event after the lane's cursor;
//! 2. else a shared catch-up reader of the lane's priority whose ring holds
//!    every event after the cursor and whose head is at most `JOIN_BEHIND`
//!    events behind it, if moving there makes a larger group than the one
//!    the lane is in (ties go to the reader further back, so that groups
//!    merge instead of trading members);
//! 3. else the reader it has; with none, a new one from its cursor. A new
//!    reader reads with the lane's own filter while no other lane of its
//!    priority is catching up (a lane alone pays only for its own events),
//!    else every event, so the next lanes can join it. A rebuild's lane
//!    (low priority) shares nothing but the live reader.
//!
//! A lane that falls under its reader's floor (the live reader dropped
//! events it had not read, or a catch-up reader stopped waiting for it) is
//! back to rule 1 at its next batch: it reads on its own, and joins the
//! live reader again once it is near the head.

mod head;
pub(crate) mod reader;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use eventstore::SubscriptionFilter;
use parking_lot::Mutex;

use crate::runtime::Description;
pub use head::{Head, Lag};
pub(crate) use reader::Reader;

/// How far behind a lane's cursor a catch-up reader may be for the lane to
/// join it and wait there (at ~300k decoded events a second, a fraction of a second).
pub(crate) const JOIN_BEHIND: u64 = 64 * 1024;

/// The host's readers.
pub(crate) struct SharedFeed {
    client: eventstore::Client,
    head: Arc<Head>,
    live: Arc<Running>,
    /// The catch-up readers; one ends when its last member leaves.
    catching_up: Mutex<Vec<Weak<Running>>>,
    next_id: AtomicU64,
}

/// A reader and the task that reads into it (none for the live reader: the head tracker feeds it).
pub(crate) struct Running {
    pub(crate) reader: Arc<Reader>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A lane's place in a reader.
pub(crate) struct Membership {
    pub(crate) running: Arc<Running>,
    cursor: Arc<AtomicU64>,
}

impl Membership {
    pub(crate) fn reader(&self) -> &Arc<Reader> {
        &self.running.reader
    }

    /// The lane has taken every event up to `position`.
    pub(crate) fn moved_to(&self, position: u64) {
        self.cursor.store(position, Ordering::Release);
        self.running.reader.moved();
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.running.reader.leave(&self.cursor);
    }
}

impl SharedFeed {
    /// Readers through `client`; the live one is `head`'s.
    pub(crate) fn new(client: eventstore::Client, head: Arc<Head>) -> SharedFeed {
        let live = Arc::new(Running { reader: head.live().clone(), task: None });
        SharedFeed { client, head, live, catching_up: Mutex::new(Vec::new()), next_id: AtomicU64::new(1) }
    }

    /// How many reads of `$all` this host has open (the live one included).
    pub(crate) fn readers(&self) -> usize {
        1 + self.catching_up.lock().iter().filter(|r| r.strong_count() > 0).count()
    }

    /// The reader for a lane at `cursor` (see the module's rules): `current`
    /// when it is still the right one, else a membership in another.
    pub(crate) fn choose(
        &self,
        current: Option<Membership>,
        cursor: Option<u64>,
        description: &Description,
        background: bool,
    ) -> Membership {
        let mut catching_up = self.catching_up.lock();
        catching_up.retain(|r| r.strong_count() > 0);
        let reachable = |reader: &Reader| {
            reader.covers(cursor)
                && match (reader.head(), cursor) {
                    (_, None) => true,
                    (Some(head), Some(c)) if head >= c => true,
                    (head, Some(c)) => self.head.events_between(head, c).is_some_and(|n| n <= JOIN_BEHIND),
                }
        };
        let mut current = current;
        if let Some(live) = current.take_if(|m| m.running.reader.live && m.reader().covers(cursor)) {
            return live;
        }
        if reachable(&self.live.reader) {
            return self.enter(self.live.clone(), cursor);
        }
        // A lane its reader left behind reads alone for now: were others to
        // join it, they would be held back by the lane that was too slow.
        let detached = current.as_ref().is_some_and(|m| !m.reader().covers(cursor));
        let current = current.filter(|m| m.reader().covers(cursor) && !m.running.reader.live);
        let here = current.as_ref().map_or(0, |m| m.reader().members());
        let here_head = current.as_ref().and_then(|m| m.reader().head());
        let better = catching_up
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|r| {
                let reader = &r.reader;
                reader.complete
                    && !reader.background
                    && !background
                    && current.as_ref().is_none_or(|m| !Arc::ptr_eq(&m.running, r))
                    && reachable(reader)
            })
            .max_by_key(|r| (r.reader.members(), std::cmp::Reverse(r.reader.head())));
        if let Some(better) = better {
            let there = better.reader.members() + 1;
            let further_back = better.reader.head() < here_head;
            if current.is_none() || there > here || (there == here && further_back) {
                return self.enter(better, cursor);
            }
        }
        if let Some(current) = current {
            return current;
        }
        // A new reader from the cursor.
        let shared =
            !background && !detached && catching_up.iter().any(|r| r.upgrade().is_some_and(|r| !r.reader.background));
        let filter = if shared { everything() } else { lane_filter(description) };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let complete = shared || (!background && !detached && is_everything(description));
        let reader = Arc::new(Reader::new(id, false, background, complete, cursor));
        let task = tokio::spawn(reader::read(self.client.clone(), reader.clone(), filter));
        let running = Arc::new(Running { reader, task: Some(task) });
        catching_up.push(Arc::downgrade(&running));
        tracing::debug!(reader = id, ?cursor, complete, background, "a new read of $all");
        self.enter(running, cursor)
    }

    fn enter(&self, running: Arc<Running>, cursor: Option<u64>) -> Membership {
        let cursor = running.reader.enter(cursor);
        Membership { running, cursor }
    }
}

fn everything() -> SubscriptionFilter {
    SubscriptionFilter::on_event_type().exclude_system_events()
}

fn is_everything(d: &Description) -> bool {
    d.stream_prefixes.is_empty() && d.event_types.is_empty() && d.event_type_prefixes.is_empty()
}

/// A lone lane's server-side filter: stream prefixes, else event types,
/// else every event but the system's. `Description::wants` refines it per event.
fn lane_filter(description: &Description) -> SubscriptionFilter {
    let d = description;
    if !d.stream_prefixes.is_empty() {
        d.stream_prefixes.iter().fold(SubscriptionFilter::on_stream_name(), |f, p| f.add_prefix(p))
    } else if !d.event_types.is_empty() {
        SubscriptionFilter::on_event_type().regex(type_regex(&d.event_types, &d.event_type_prefixes))
    } else if !d.event_type_prefixes.is_empty() {
        d.event_type_prefixes.iter().fold(SubscriptionFilter::on_event_type(), |f, p| f.add_prefix(p))
    } else {
        everything()
    }
}

/// A regex matching exactly `types` or anything starting with `prefixes`
/// (a server filter is prefixes or one regex, not both).
fn type_regex(types: &[String], prefixes: &[String]) -> String {
    let escape = |s: &String| fancy_regex::escape(s).into_owned();
    let exact = types.iter().map(escape).collect::<Vec<_>>().join("|");
    let alternatives = std::iter::once(format!("(?:{exact})$")).chain(prefixes.iter().map(escape));
    format!("^(?:{})", alternatives.collect::<Vec<_>>().join("|"))
}

#[cfg(test)]
mod tests {
    use super::type_regex;

    #[test]
    fn the_type_regex_is_exact_for_types_and_open_for_prefixes() {
        let re = fancy_regex::Regex::new(&type_regex(&["Order.Shipped".into(), "Paid".into()], &["Stock".into()]))
            .expect("valid");
        for wanted in ["Order.Shipped", "Paid", "StockReceived"] {
            assert!(re.is_match(wanted).expect("matches"), "{wanted}");
        }
        for unwanted in ["OrderXShipped", "Order.ShippedNotificationSent", "PaidTwice", "RePaid", "stock"] {
            assert!(!re.is_match(unwanted).expect("matches"), "{unwanted}");
        }
    }
}
