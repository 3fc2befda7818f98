//! The head of `$all`, for lag.
//!
//! Commit positions are byte offsets, not event counts, so "how many events
//! is a projection behind" cannot be computed from two positions. The tracker
//! follows `$all` (system events excluded) and keeps every event's position
//! and creation time, 16 bytes per event; lag is then a binary search:
//! `lag_events` counts the events after a checkpoint, `lag_seconds` is how
//! long the first of them has been waiting. One tracker serves every
//! projection of the host.
//!
//! Its subscription is also the host's live reader (`feed`): each event it
//! reads goes into the live ring, from which the lanes at the head take
//! theirs, so following the head costs one read however many lanes do.

use std::sync::Arc;
use std::time::Duration;

use eventstore::{StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter};
use parking_lot::RwLock;
use tokio::sync::watch;

use super::reader::{to_event, Reader};

/// Positions and creation times of `$all`'s events, in order.
#[derive(Debug, Default)]
struct Log {
    positions: Vec<u64>,
    created_ms: Vec<i64>,
}

/// How far a checkpoint is behind the head.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lag {
    /// Events after the checkpoint.
    pub events: u64,
    /// How long the first of them has been waiting, in seconds (0 without one).
    pub seconds: f64,
}

/// Follows the head of `$all`.
#[derive(Debug)]
pub struct Head {
    log: Arc<RwLock<Log>>,
    seen: watch::Receiver<u64>,
    live: Arc<Reader>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Head {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Head {
    /// Starts following `$all` from its beginning through `client`.
    pub fn follow(client: eventstore::Client) -> Head {
        let log = Arc::new(RwLock::new(Log::default()));
        let (seen_tx, seen) = watch::channel(0);
        let live = Arc::new(Reader::new(0, true, false, true, None));
        let task = tokio::spawn(track(client, log.clone(), seen_tx, live.clone()));
        Head { log, seen, live, task }
    }

    /// The live reader this tracker feeds.
    pub(crate) fn live(&self) -> &Arc<Reader> {
        &self.live
    }

    /// How many events lie after `from` up to `to` (`None` while the
    /// tracker has not read as far as `to`).
    pub(crate) fn events_between(&self, from: Option<u64>, to: u64) -> Option<u64> {
        let log = self.log.read();
        if log.positions.last().is_none_or(|&last| last < to) {
            return None;
        }
        let after = |p: Option<u64>| p.map_or(0, |p| log.positions.partition_point(|&q| q <= p));
        Some(after(Some(to)).saturating_sub(after(from)) as u64)
    }

    /// How far `checkpoint` (none: nothing applied yet) is behind the head.
    pub fn lag(&self, checkpoint: Option<u64>) -> Lag {
        let log = self.log.read();
        let next = checkpoint.map_or(0, |c| log.positions.partition_point(|&p| p <= c));
        let Some(&created_ms) = log.created_ms.get(next) else { return Lag::default() };
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        Lag { events: (log.positions.len() - next) as u64, seconds: (now_ms - created_ms).max(0) as f64 / 1000.0 }
    }

    /// The position of the last event seen, if any.
    pub fn position(&self) -> Option<u64> {
        self.log.read().positions.last().copied()
    }

    /// Waits until the tracker has seen the event at `position` (or a later one).
    pub async fn reached(&self, position: u64) {
        let mut seen = self.seen.clone();
        // The sender lives as long as the tracker task, which runs until `self` drops.
        let _ = seen.wait_for(|&p| p >= position).await;
    }
}

async fn track(client: eventstore::Client, log: Arc<RwLock<Log>>, seen: watch::Sender<u64>, live: Arc<Reader>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let start = match log.read().positions.last() {
            Some(&commit) => StreamPosition::Position(eventstore::Position { commit, prepare: commit }),
            None => StreamPosition::Start,
        };
        let filter = SubscriptionFilter::on_event_type().exclude_system_events();
        let options = SubscribeToAllOptions::default().position(start).filter(filter);
        let mut subscription = client.subscribe_to_all(&options).await;
        loop {
            match subscription.next_subscription_event().await {
                Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                    let event = resolved.get_original_event();
                    {
                        let mut log = log.write();
                        log.positions.push(event.position.commit);
                        log.created_ms.push(event.created.timestamp_millis());
                    }
                    seen.send_replace(event.position.commit);
                    live.push(to_event(event)).await;
                    backoff = Duration::from_millis(100);
                }
                Ok(SubscriptionEvent::Checkpoint(position)) => live.advance(position.commit),
                Ok(SubscriptionEvent::CaughtUp) => live.caught_up(),
                Ok(_) => live.healthy(),
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "lost the head of $all; resubscribing");
                    live.broken(e.to_string());
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
