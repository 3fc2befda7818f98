//! What happens to events that were not acked: retried, parked, or handed
//! back when their consumer leaves.

use tokio::time::Instant;
use uuid::Uuid;

use super::Group;
use crate::persistent::messages::{ConsumerId, Delivery};
use crate::persistent::{source, Dropped};

impl Group {
    /// A member nacked with `Stop`: EventStoreDB stops the subscription, so every
    /// consumer is dropped (what they held goes back to be retried); the group stays.
    pub(super) fn stop_consumers(&mut self, by: ConsumerId) {
        if self.consumers.find(by).is_none() {
            return;
        }
        for consumer in self.consumers.take_all() {
            let _ = consumer.join.tx.send(Delivery::Dropped(Dropped::Stopped));
            self.requeue_held_by(consumer.join.id);
        }
    }

    pub(super) async fn retry_or_park(&mut self, event: Uuid) {
        let Some(entry) = self.entries.get_mut(&event) else { return };
        if entry.retries >= self.settings.max_retry_count {
            self.park(&event).await;
        } else {
            entry.retries += 1;
            self.retry.push_back(event);
        }
    }

    pub(super) async fn park(&mut self, event: &Uuid) {
        let Some(entry) = self.entries.get(event) else { return };
        match source::park(&self.store, &self.key, &entry.item).await {
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

    pub(super) async fn park_waiting(&mut self) {
        for event in std::mem::take(&mut self.to_park) {
            self.park(&event).await;
        }
    }

    /// Retries (or parks) every event whose consumer did not answer in time.
    pub(super) async fn expire(&mut self) {
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

    pub(super) fn leave(&mut self, id: ConsumerId) {
        if self.consumers.remove(id) {
            self.requeue_held_by(id);
        }
    }

    /// Events a departed consumer held go back to the front, in their order,
    /// as retries; one past its retries is parked instead.
    pub(super) fn requeue_held_by(&mut self, id: ConsumerId) {
        let mut held: Vec<(Option<u64>, Uuid)> =
            self.entries.iter().filter(|(_, e)| e.holder == Some(id)).map(|(k, e)| (e.order, *k)).collect();
        held.sort();
        for (_, event) in held.into_iter().rev() {
            let entry = self.entries.get_mut(&event).expect("listed above");
            entry.holder = None;
            if let Some(deadline) = entry.deadline.take() {
                self.deadlines.remove(&(deadline, event));
            }
            if entry.retries >= self.settings.max_retry_count {
                self.to_park.push(event);
            } else {
                entry.retries += 1;
                self.retry.push_front(event);
            }
        }
    }
}
