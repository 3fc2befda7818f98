//! The feed: one lane's filtered catch-up subscription to `$all`, read
//! into batches ahead of the batch that runs.
//!
//! A feeder task reads the subscription from the checkpoint and forms the
//! next batch while one runs and commits; the channel between them holds at
//! most `PIPELINE_DEPTH` batches, so a slow module slows the reading down
//! instead of buffering events without bound. The feed decides which events
//! a module sees (`Description::wants`, the same rule the SDK's harness
//! uses); it runs no module and writes nothing.

use eventstore::{StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter};
use tokio::sync::mpsc;

use super::BatchConfig;
use crate::readmodel::Checkpoint;
use crate::runtime::{Description, Event};

/// Batches from the subscription, in order; an error when it breaks. The
/// feeder task stops when this is dropped.
pub(super) struct Feed {
    pub(super) batches: mpsc::Receiver<anyhow::Result<Batch>>,
    _feeder: AbortOnDrop,
}

/// Subscribes to `$all` after `checkpoint` with `description`'s filter.
pub(super) async fn subscribe(
    client: &eventstore::Client,
    checkpoint: Option<Checkpoint>,
    description: &Description,
    config: BatchConfig,
) -> Feed {
    let start = match checkpoint {
        Some(c) => StreamPosition::Position(eventstore::Position { commit: c.position, prepare: c.position }),
        None => StreamPosition::Start,
    };
    let options = SubscribeToAllOptions::default().position(start).filter(filter(description));
    let subscription = client.subscribe_to_all(&options).await;
    let (sender, batches) = mpsc::channel(PIPELINE_DEPTH);
    let feeder = tokio::spawn(feed(subscription, description.clone(), config, sender));
    Feed { batches, _feeder: AbortOnDrop(feeder) }
}

/// The server-side filter: stream prefixes, else event types, else every
/// event but the system's. `Description::wants` refines it per event.
fn filter(description: &Description) -> SubscriptionFilter {
    let d = description;
    if !d.stream_prefixes.is_empty() {
        d.stream_prefixes.iter().fold(SubscriptionFilter::on_stream_name(), |f, p| f.add_prefix(p))
    } else if !d.event_types.is_empty() {
        SubscriptionFilter::on_event_type().regex(type_regex(&d.event_types, &d.event_type_prefixes))
    } else if !d.event_type_prefixes.is_empty() {
        d.event_type_prefixes.iter().fold(SubscriptionFilter::on_event_type(), |f, p| f.add_prefix(p))
    } else {
        SubscriptionFilter::on_event_type().exclude_system_events()
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

/// Batches formed ahead of the one running.
const PIPELINE_DEPTH: usize = 2;

/// What the feeder hands the runner.
pub(super) struct Batch {
    /// The events the module wants.
    pub(super) events: Vec<Event>,
    /// Where the batch ends in `$all` (its last event or server checkpoint).
    pub(super) position: Option<u64>,
    /// Whether the subscription reached the head of `$all` with this batch.
    pub(super) caught_up: bool,
}

pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

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
