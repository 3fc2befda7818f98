//! What a group reports of itself (EventStoreDB's `SubscriptionInfo`).

use super::settings::Settings;
use super::source::Position;
use super::GroupKey;

/// One connected consumer.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerInfo {
    pub(crate) from: String,
    pub(crate) username: String,
    pub(crate) average_per_second: i32,
    pub(crate) total_items: u64,
    pub(crate) count_since_last_measurement: u64,
    pub(crate) available_slots: u32,
    pub(crate) in_flight: u32,
    /// With extra statistics on: counters by name.
    pub(crate) measurements: Vec<(&'static str, u64)>,
}

/// A group's settings and state.
#[derive(Debug, Clone)]
pub(crate) struct GroupInfo {
    pub(crate) key: GroupKey,
    pub(crate) settings: Settings,
    pub(crate) status: &'static str,
    pub(crate) connections: Vec<ConsumerInfo>,
    pub(crate) average_per_second: i32,
    pub(crate) total_items: u64,
    pub(crate) count_since_last_measurement: u64,
    pub(crate) last_checkpointed: Option<Position>,
    pub(crate) last_known: Option<Position>,
    pub(crate) read_buffer_count: usize,
    pub(crate) live_buffer_count: usize,
    pub(crate) retry_buffer_count: usize,
    pub(crate) in_flight: u32,
    pub(crate) parked: u64,
}
