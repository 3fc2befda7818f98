//! How far a group is: which source events are done, where its checkpoint
//! may go, and which replayed parked events may be hidden.
//!
//! The checkpoint is the last position such that it and every event read
//! before it are done (acked, skipped or parked). Only the events still
//! outstanding are kept, each with the position of the source event read
//! before it, so the memory is the group's outstanding events however many
//! are done behind or after a stuck one.

use std::collections::BTreeMap;

use tokio::time::{Duration, Instant};

use super::source::Position;

#[derive(Debug)]
pub(super) struct Progress {
    /// Source events read and not done, by read order: the position read before each.
    outstanding: BTreeMap<u64, Option<Position>>,
    next_order: u64,
    last_read: Option<Position>,
    checkpointed: Option<Position>,
    done_since_checkpoint: u32,
    checkpoint_due: Instant,
    /// No checkpoint before this, whatever the counts say: a write failed.
    not_before: Instant,
    /// Replayed parked events by revision in the parked stream, and whether each is done.
    replayed: BTreeMap<u64, bool>,
    /// Parked revisions below this are done with, hidden or about to be.
    hidden_below: u64,
}

impl Progress {
    /// Progress of a group that starts after `checkpoint`.
    pub(super) fn new(checkpoint: Option<Position>, checkpoint_after: Duration) -> Progress {
        Progress {
            outstanding: BTreeMap::new(),
            next_order: 0,
            last_read: checkpoint,
            checkpointed: checkpoint,
            done_since_checkpoint: 0,
            checkpoint_due: Instant::now() + checkpoint_after,
            not_before: Instant::now(),
            replayed: BTreeMap::new(),
            hidden_below: 0,
        }
    }

    /// Registers a source event just read; its order, for [`Progress::done`].
    pub(super) fn read(&mut self, position: Position) -> u64 {
        let order = self.next_order;
        self.next_order += 1;
        self.outstanding.insert(order, self.last_read);
        self.last_read = Some(position);
        order
    }

    /// The source event of `order` is finished with.
    pub(super) fn done(&mut self, order: u64) {
        if self.outstanding.remove(&order).is_some() {
            self.done_since_checkpoint += 1;
        }
    }

    /// Where the checkpoint may go: just before the oldest outstanding event.
    pub(super) fn processed(&self) -> Option<Position> {
        match self.outstanding.first_key_value() {
            Some((_, before)) => *before,
            None => self.last_read,
        }
    }

    pub(super) fn checkpointed(&self) -> Option<Position> {
        self.checkpointed
    }

    /// The position to checkpoint now, if any: enough done and due, the upper
    /// bound reached, or `force` (the group is stopping).
    pub(super) fn due(&self, min: u32, max: u32, force: bool) -> Option<Position> {
        let processed = self.processed()?;
        if Some(processed) == self.checkpointed {
            return None;
        }
        let now = Instant::now();
        let due = now >= self.not_before
            && (self.done_since_checkpoint >= max || (self.done_since_checkpoint >= min && now >= self.checkpoint_due));
        (due || force).then_some(processed)
    }

    /// The checkpoint at `position` is written; the next is due after `after`.
    pub(super) fn written(&mut self, position: Position, after: Duration) {
        self.checkpointed = Some(position);
        self.done_since_checkpoint = 0;
        self.checkpoint_due = Instant::now() + after;
    }

    /// A write failed: try again no sooner than `after`.
    pub(super) fn postpone(&mut self, after: Duration) {
        self.not_before = Instant::now() + after;
        self.checkpoint_due = self.checkpoint_due.max(self.not_before);
    }

    /// When the loop must wake to write a checkpoint, if one is waiting for its time.
    pub(super) fn wake(&self, min: u32) -> Option<Instant> {
        let waiting = self.processed().is_some() && self.processed() != self.checkpointed;
        (waiting && self.done_since_checkpoint >= min).then_some(self.checkpoint_due.max(self.not_before))
    }

    /// Replayed parked events not yet done.
    pub(super) fn replays_outstanding(&self) -> usize {
        self.replayed.values().filter(|done| !**done).count()
    }

    /// Registers a parked event taken for replay; false if it is already
    /// replaying or done with (its `$tb` may not be written yet).
    pub(super) fn replaying(&mut self, revision: u64) -> bool {
        revision >= self.hidden_below && self.replayed.insert(revision, false).is_none()
    }

    /// The replayed parked event at `revision` is finished with; the revision
    /// below which the parked stream may now be hidden, when it moved.
    pub(super) fn replay_done(&mut self, revision: u64) -> Option<u64> {
        if let Some(done) = self.replayed.get_mut(&revision) {
            *done = true;
        }
        let mut hide_below = None;
        while let Some((&revision, true)) = self.replayed.first_key_value() {
            self.replayed.pop_first();
            self.hidden_below = self.hidden_below.max(revision + 1);
            hide_below = Some(self.hidden_below);
        }
        hide_below
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_stops_before_the_oldest_outstanding_event() {
        let mut progress = Progress::new(Some(9), Duration::ZERO);
        let orders: Vec<u64> = [10, 14, 20, 31].into_iter().map(|p| progress.read(p)).collect();
        assert_eq!(progress.processed(), Some(9));
        progress.done(orders[1]);
        progress.done(orders[2]);
        assert_eq!(progress.processed(), Some(9), "10 is still outstanding");
        progress.done(orders[0]);
        assert_eq!(progress.processed(), Some(20));
        assert_eq!(progress.due(1, 1000, false), Some(20));
        progress.written(20, Duration::from_secs(60));
        assert_eq!(progress.due(1, 1000, false), None, "not due for a minute");
        assert_eq!(progress.due(1, 1000, true), None, "nothing new to write");
        progress.done(orders[3]);
        assert_eq!(progress.due(1, 1000, true), Some(31));
        assert_eq!(progress.due(2, 1, false), Some(31), "the upper bound does not wait");
        progress.postpone(Duration::from_secs(60));
        assert_eq!(progress.due(2, 1, false), None, "not even the upper bound, after a failed write");
        assert_eq!(progress.due(2, 1, true), Some(31), "a stopping group still tries");
    }

    #[test]
    fn a_fresh_group_has_nothing_to_checkpoint_until_an_event_is_done() {
        let mut progress = Progress::new(None, Duration::ZERO);
        let first = progress.read(5);
        assert_eq!(progress.processed(), None);
        progress.done(first);
        assert_eq!(progress.due(1, 10, false), Some(5));
    }

    #[test]
    fn replayed_parked_events_are_hidden_only_up_to_the_first_not_done() {
        let mut progress = Progress::new(None, Duration::ZERO);
        for revision in [3, 4, 5] {
            assert!(progress.replaying(revision));
        }
        assert!(!progress.replaying(4));
        assert_eq!(progress.replay_done(4), None);
        assert_eq!(progress.replay_done(3), Some(5));
        assert!(!progress.replaying(3), "done, even before its $tb is written");
        assert_eq!(progress.replay_done(5), Some(6));
    }
}
