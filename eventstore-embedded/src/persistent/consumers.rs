//! A group's connected consumers, and which one the next event goes to.

use super::info::ConsumerInfo;
use super::messages::{ConsumerId, Joining};
use super::Strategy;

/// One connected consumer and what it holds.
pub(super) struct Consumer {
    pub(super) join: Joining,
    pub(super) in_flight: u32,
    pub(super) delivered: u64,
    pub(super) acked: u64,
    pub(super) nacked: u64,
    measured: u64,
}

impl Consumer {
    fn has_room(&self) -> bool {
        self.in_flight < self.join.buffer_size
    }
}

/// The consumers in the order they joined.
#[derive(Default)]
pub(super) struct Consumers {
    list: Vec<Consumer>,
    /// Where round robin looks first.
    turn: usize,
}

impl Consumers {
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn add(&mut self, join: Joining) {
        self.list.push(Consumer { join, in_flight: 0, delivered: 0, acked: 0, nacked: 0, measured: 0 });
    }

    /// Removes consumer `id`; false when it was not there.
    pub(super) fn remove(&mut self, id: ConsumerId) -> bool {
        let before = self.list.len();
        self.list.retain(|c| c.join.id != id);
        self.list.len() != before
    }

    pub(super) fn take_all(&mut self) -> Vec<Consumer> {
        std::mem::take(&mut self.list)
    }

    pub(super) fn at(&mut self, index: usize) -> &mut Consumer {
        &mut self.list[index]
    }

    pub(super) fn find(&mut self, id: ConsumerId) -> Option<&mut Consumer> {
        self.list.iter_mut().find(|c| c.join.id == id)
    }

    pub(super) fn in_flight(&self) -> u32 {
        self.list.iter().map(|c| c.in_flight).sum()
    }

    pub(super) fn any_room(&self) -> bool {
        self.list.iter().any(Consumer::has_room)
    }

    /// The consumer for an event with this `pin` key under `strategy`, if it has room.
    pub(super) fn choose(&mut self, strategy: Strategy, pin: u64) -> Option<usize> {
        let n = self.list.len();
        match strategy {
            Strategy::DispatchToSingle => self.list.iter().position(Consumer::has_room),
            Strategy::RoundRobin => {
                let found = (0..n).map(|i| (self.turn + i) % n).find(|&i| self.list[i].has_room())?;
                self.turn = found + 1;
                Some(found)
            }
            Strategy::Pinned | Strategy::PinnedByCorrelation => {
                // Rendezvous hashing: a stream keeps its consumer while that consumer stays,
                // and only the streams of a consumer that leaves move.
                let index = (0..n).max_by_key(|&i| pin_weight(pin, self.list[i].join.id))?;
                self.list[index].has_room().then_some(index)
            }
        }
    }

    /// Each consumer's figures; rates over the `seconds` since the last call.
    pub(super) fn describe(&mut self, seconds: f64, extra_statistics: bool) -> Vec<ConsumerInfo> {
        self.list
            .iter_mut()
            .map(|c| {
                let since = c.delivered - c.measured;
                c.measured = c.delivered;
                ConsumerInfo {
                    from: c.join.from.clone(),
                    username: c.join.username.clone(),
                    average_per_second: (since as f64 / seconds) as i32,
                    total_items: c.delivered,
                    count_since_last_measurement: since,
                    available_slots: c.join.buffer_size - c.in_flight,
                    in_flight: c.in_flight,
                    measurements: if extra_statistics {
                        vec![("Acked", c.acked), ("Nacked", c.nacked)]
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect()
    }
}

/// The weight of consumer `id` for pin `key` (rendezvous hashing).
fn pin_weight(key: u64, id: ConsumerId) -> u64 {
    // SplitMix64 of the pair: cheap, well spread, stable across runs.
    let mut z = key ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
