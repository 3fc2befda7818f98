//! The feed: one lane's batches, taken from the host's shared reads of
//! `$all` (`crate::feed`) at the lane's own cursor.
//!
//! A batch holds up to `max_batch` events the module wants and closes
//! `max_wait` after its first event; it ends at the last event it looked
//! at (wanted or not), or at a later position the reader's server reported.
//! Between batches the lane may move to another reader (never inside one);
//! the readers read ahead of the batch that runs, within their rings' bounds.
//! The feed decides which events a module sees (`Description::wants`, the
//! same rule the SDK's harness uses); it runs no module and writes nothing.

use std::sync::Arc;

use super::BatchConfig;
use crate::feed::{Membership, SharedFeed};
use crate::runtime::{Description, Event};

/// Events looked at for one batch at most, wanted or not, so that a lane
/// wanting few of them still moves its checkpoint on.
const MAX_LOOKED_AT: usize = 16 * 1024;

/// A lane's place in the shared feed.
pub(super) struct Feed {
    shared: Arc<SharedFeed>,
    member: Option<Membership>,
    /// Where the last batch handed out ended (`None`: before the first event).
    cursor: Option<u64>,
    description: Description,
    config: BatchConfig,
    background: bool,
    /// Whether `caught_up` was reported for the reader the lane is in.
    told_caught_up: bool,
}

/// What the feed hands the runner.
pub(super) struct Batch {
    /// The events the module wants.
    pub(super) events: Vec<Arc<Event>>,
    /// Where the batch ends in `$all` (`None`: nowhere new).
    pub(super) position: Option<u64>,
    /// Whether the lane reached the head of `$all` with this batch.
    pub(super) caught_up: bool,
}

impl Feed {
    /// The lane's feed after `cursor` (its checkpoint).
    pub(super) fn new(
        shared: Arc<SharedFeed>,
        cursor: Option<u64>,
        description: &Description,
        config: BatchConfig,
        background: bool,
    ) -> Feed {
        Feed {
            shared,
            member: None,
            cursor,
            description: description.clone(),
            config,
            background,
            told_caught_up: false,
        }
    }

    /// The next batch; an error when the lane's reader lost the store.
    /// Cancel-safe: nothing moves until a batch is returned.
    pub(super) async fn next(&mut self) -> anyhow::Result<Batch> {
        loop {
            let before = self.member.as_ref().map(|m| m.reader().id);
            let member = self.shared.choose(self.member.take(), self.cursor, &self.description, self.background);
            if before != Some(member.reader().id) {
                self.told_caught_up = false;
            }
            self.member = Some(member);
            if let Some(batch) = self.form().await? {
                if let Some(position) = batch.position {
                    self.cursor = Some(position);
                    if let Some(member) = &self.member {
                        member.moved_to(position);
                    }
                }
                self.told_caught_up |= batch.caught_up;
                return Ok(batch);
            }
            // Fell under the reader's floor: choose again.
        }
    }

    /// Forms a batch from the current reader; `None` when the reader no
    /// longer holds the events after the cursor.
    async fn form(&self) -> anyhow::Result<Option<Batch>> {
        let Some(member) = &self.member else { return Ok(None) };
        let reader = member.reader().clone();
        let mut progress = reader.progress();
        let mut batch = Batch { events: Vec::new(), position: None, caught_up: false };
        let mut at = self.cursor;
        let mut looked_at = 0;
        let mut deadline = None;
        let mut closing = false;
        // Until it has something to hand out, every event wakes the lane.
        let mut hungry = Some(reader.hungry());
        loop {
            let seen = progress.borrow_and_update().clone();
            let Some(slice) = reader.after(at, CHUNK) else {
                // Dropped under `at`: every event up to it was looked at, so
                // a batch ending there is still exact.
                batch.position = at.filter(|&p| self.cursor.is_none_or(|c| p > c));
                batch.caught_up = false;
                return Ok(batch.position.is_some().then_some(batch));
            };
            for event in slice.events {
                at = Some(event.commit_position);
                looked_at += 1;
                if self.description.wants(&event.stream_id, &event.event_type) {
                    batch.events.push(event);
                }
                if batch.events.len() >= self.config.max_batch || looked_at >= MAX_LOOKED_AT {
                    batch.position = at;
                    batch.caught_up = false;
                    return Ok(Some(batch));
                }
            }
            if !slice.at_end {
                continue;
            }
            at = slice.reached.max(at);
            batch.position = at.filter(|&p| self.cursor.is_none_or(|c| p > c));
            batch.caught_up = seen.caught_up;
            if batch.position.is_none() {
                if seen.caught_up && !self.told_caught_up {
                    return Ok(Some(batch));
                }
                if let Some(problem) = seen.problem {
                    anyhow::bail!(problem);
                }
                // Nothing new: wait for the reader.
                if progress.changed().await.is_err() {
                    return Ok(None);
                }
                continue;
            }
            if closing {
                return Ok(Some(batch));
            }
            // Something to hand out: wait a little for more to fill the
            // batch, woken every few events; at the deadline, take what the
            // ring holds by then and hand the batch out.
            hungry.take();
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.config.max_wait);
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return Ok(Some(batch)) },
                () = tokio::time::sleep_until(deadline) => closing = true,
            }
        }
    }
}

/// Events taken from a ring at a time.
const CHUNK: usize = 1024;
