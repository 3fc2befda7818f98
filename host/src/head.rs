//! The head of `$all`, for lag.
//!
//! Commit positions are byte offsets, not event counts, so "how many events
//! is a projection behind" cannot be computed from two positions. The tracker
//! follows `$all` (system events excluded) and keeps every event's position
//! and creation time, 16 bytes per event; lag is then a binary search:
//! `lag_events` counts the events after a checkpoint, `lag_seconds` is how
//! long the first of them has been waiting. One tracker serves every
//! projection of the host.

use std::sync::Arc;
use std::time::Duration;

use eventstore::{StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter};
use parking_lot::RwLock;
use tokio::sync::watch;

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
        let task = tokio::spawn(track(client, log.clone(), seen_tx));
        Head { log, seen, task }
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

async fn track(client: eventstore::Client, log: Arc<RwLock<Log>>, seen: watch::Sender<u64>) {
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
                    backoff = Duration::from_millis(100);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "lost the head of $all; resubscribing");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
