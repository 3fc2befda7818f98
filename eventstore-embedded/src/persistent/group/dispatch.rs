//! Which consumer gets which event, and when.

use std::collections::HashSet;

use tokio::time::{Duration, Instant};
use uuid::Uuid;

use super::Group;
use crate::persistent::messages::Delivery;
use crate::persistent::Strategy;

impl Group {
    /// Hands retries, then fresh events, to consumers with room, in order.
    ///
    /// Round robin and dispatch-to-single stop at the first event no consumer
    /// has room for. A pinned group goes on past an event whose consumer is
    /// full, holding back only the later events with the same pin, so one
    /// consumer that stops acking holds up its own streams and no others.
    pub(super) fn dispatch(&mut self) {
        // A consumer found gone mid-pass changes the queues: start again.
        while !self.dispatch_pass() {}
    }

    /// One pass over the queues; false when a consumer was found gone.
    pub(super) fn dispatch_pass(&mut self) -> bool {
        let pinned = matches!(self.settings.strategy, Strategy::Pinned | Strategy::PinnedByCorrelation);
        let mut held_back: HashSet<u64> = HashSet::new();
        for retrying in [true, false] {
            let mut index = 0;
            loop {
                if !self.consumers.any_room() {
                    return true;
                }
                let queue = if retrying { &mut self.retry } else { &mut self.fresh };
                let Some(&id) = queue.get(index) else { break };
                let Some(entry) = self.entries.get(&id) else {
                    // Done while it waited (a replay acked through its first delivery).
                    queue.remove(index);
                    continue;
                };
                let pin = entry.pin;
                if held_back.contains(&pin) {
                    index += 1;
                    continue;
                }
                let Some(chosen) = self.consumers.choose(self.settings.strategy, pin) else {
                    if !pinned {
                        return true;
                    }
                    held_back.insert(pin);
                    index += 1;
                    continue;
                };
                queue.remove(index);
                if !self.deliver(id, chosen) {
                    return false;
                }
            }
        }
        true
    }

    /// Sends event `id` to consumer `chosen`; false (the event back in front
    /// of the retries, the consumer gone) when it has left.
    pub(super) fn deliver(&mut self, id: Uuid, chosen: usize) -> bool {
        let consumer = self.consumers.at(chosen);
        let entry = self.entries.get_mut(&id).expect("dispatched events are entries");
        let delivery = Delivery::Event { item: entry.item.clone(), retry_count: entry.retries };
        if consumer.join.tx.send(delivery).is_err() {
            let gone = consumer.join.id;
            self.retry.push_front(id);
            self.leave(gone);
            return false;
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
        true
    }
}
