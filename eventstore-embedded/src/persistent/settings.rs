//! What a consumer group is: its source, where it starts and how it hands
//! out events. Checked once when a group is created or updated, and kept in
//! the configuration event as JSON.

use serde::{Deserialize, Serialize};

/// Where a group's events come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Source {
    /// One stream, by revision.
    Stream(String),
    /// `$all`, by log position, optionally filtered.
    All(Option<FilterSpec>),
}

impl Source {
    /// The name clients give the source: the stream, or `$all`.
    pub(crate) fn name(&self) -> &str {
        match self {
            Source::Stream(name) => name,
            Source::All(_) => "$all",
        }
    }
}

/// A `$all` filter as the client sent it (compiled where it is used).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FilterSpec {
    /// On the stream name; otherwise on the event type.
    pub(crate) on_stream: bool,
    pub(crate) prefixes: Vec<String>,
    pub(crate) regex: String,
}

/// Where a new group starts: a stream revision or a `$all` position, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StartFrom {
    Start,
    End,
    At(u64),
}

/// How a group chooses the consumer for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Strategy {
    /// The first consumer (in connection order) with room; the next when it is full.
    DispatchToSingle,
    /// Consumers in turn, skipping full ones.
    RoundRobin,
    /// Every event of a stream to the same consumer while the group's members do not change.
    Pinned,
    /// As `Pinned`, by the `$correlationId` of the event's metadata (its stream without one).
    PinnedByCorrelation,
}

impl Strategy {
    /// EventStoreDB's name for the strategy.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Strategy::DispatchToSingle => "DispatchToSingle",
            Strategy::RoundRobin => "RoundRobin",
            Strategy::Pinned => "Pinned",
            Strategy::PinnedByCorrelation => "PinnedByCorrelation",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Strategy> {
        [Strategy::DispatchToSingle, Strategy::RoundRobin, Strategy::Pinned, Strategy::PinnedByCorrelation]
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// A group's settings, with EventStoreDB's meanings and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) start_from: StartFrom,
    /// Deliver the event a link (`$>`) points to, with the link beside it.
    pub(crate) resolve_links: bool,
    /// Report per-consumer measurements in the group's info.
    pub(crate) extra_statistics: bool,
    /// An event not acked within this is retried; 0 never times out.
    pub(crate) message_timeout_ms: u32,
    /// An event retried this many times is parked on the next failure.
    pub(crate) max_retry_count: u32,
    /// Events read ahead once the group has caught up.
    pub(crate) live_buffer_size: u32,
    /// Events per read of the source.
    pub(crate) read_batch_size: u32,
    /// Events read ahead while the group catches up.
    pub(crate) history_buffer_size: u32,
    /// A checkpoint is written when this long has passed and `min_checkpoint_count` events are done...
    pub(crate) checkpoint_after_ms: u32,
    pub(crate) min_checkpoint_count: u32,
    /// ... or at once when this many are done.
    pub(crate) max_checkpoint_count: u32,
    /// 0: no limit.
    pub(crate) max_subscriber_count: u32,
    pub(crate) strategy: Strategy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            start_from: StartFrom::End,
            resolve_links: false,
            extra_statistics: false,
            message_timeout_ms: 30_000,
            max_retry_count: 10,
            live_buffer_size: 500,
            read_batch_size: 20,
            history_buffer_size: 500,
            checkpoint_after_ms: 2_000,
            min_checkpoint_count: 10,
            max_checkpoint_count: 1_000,
            max_subscriber_count: 0,
            strategy: Strategy::RoundRobin,
        }
    }
}

/// The largest read-ahead and read batch a group may be given.
pub(crate) const MAX_BUFFER: u32 = 100_000;

/// The numbers as they come off the wire (signed), checked into [`Settings`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawSettings {
    pub(crate) message_timeout_ms: i64,
    pub(crate) max_retry_count: i32,
    pub(crate) live_buffer_size: i32,
    pub(crate) read_batch_size: i32,
    pub(crate) history_buffer_size: i32,
    pub(crate) checkpoint_after_ms: i64,
    pub(crate) min_checkpoint_count: i32,
    pub(crate) max_checkpoint_count: i32,
    pub(crate) max_subscriber_count: i32,
}

impl RawSettings {
    /// Checks every number; the message names the first one out of range.
    pub(crate) fn check(
        self,
        start_from: StartFrom,
        resolve_links: bool,
        extra_statistics: bool,
        strategy: Strategy,
    ) -> Result<Settings, String> {
        let non_negative = |name: &str, v: i64| -> Result<u32, String> {
            u32::try_from(v).map_err(|_| format!("{name} must be between 0 and {}, not {v}", u32::MAX))
        };
        let positive = |name: &str, v: i32| -> Result<u32, String> {
            match u32::try_from(v) {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} must be greater than 0, not {v}")),
            }
        };
        // A group keeps this many events in memory: bounded, so one setting cannot fill the server.
        let buffer = |name: &str, v: i32| -> Result<u32, String> {
            match positive(name, v)? {
                n if n <= MAX_BUFFER => Ok(n),
                n => Err(format!("{name} must be at most {MAX_BUFFER}, not {n}")),
            }
        };
        let settings = Settings {
            start_from,
            resolve_links,
            extra_statistics,
            message_timeout_ms: non_negative("message timeout (ms)", self.message_timeout_ms)?,
            max_retry_count: non_negative("max retry count", self.max_retry_count.into())?,
            live_buffer_size: buffer("live buffer size", self.live_buffer_size)?,
            read_batch_size: buffer("read batch size", self.read_batch_size)?,
            history_buffer_size: buffer("history buffer size", self.history_buffer_size)?,
            checkpoint_after_ms: non_negative("checkpoint after (ms)", self.checkpoint_after_ms)?,
            min_checkpoint_count: non_negative("min checkpoint count", self.min_checkpoint_count.into())?,
            max_checkpoint_count: positive("max checkpoint count", self.max_checkpoint_count)?,
            max_subscriber_count: non_negative("max subscriber count", self.max_subscriber_count.into())?,
            strategy,
        };
        if settings.min_checkpoint_count > settings.max_checkpoint_count {
            return Err(format!(
                "min checkpoint count ({}) must not be greater than max checkpoint count ({})",
                settings.min_checkpoint_count, settings.max_checkpoint_count
            ));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawSettings {
        RawSettings {
            message_timeout_ms: 30_000,
            max_retry_count: 10,
            live_buffer_size: 500,
            read_batch_size: 20,
            history_buffer_size: 500,
            checkpoint_after_ms: 2_000,
            min_checkpoint_count: 10,
            max_checkpoint_count: 1_000,
            max_subscriber_count: 0,
        }
    }

    #[test]
    fn the_defaults_pass_and_numbers_out_of_range_are_named() {
        let ok = raw().check(StartFrom::Start, false, false, Strategy::RoundRobin).expect("defaults");
        assert_eq!(Settings { start_from: StartFrom::Start, ..Settings::default() }, ok);
        let refused =
            |raw: RawSettings| raw.check(StartFrom::Start, false, false, Strategy::Pinned).expect_err("refused");
        assert!(refused(RawSettings { read_batch_size: 0, ..raw() }).contains("read batch size"));
        assert!(refused(RawSettings { live_buffer_size: i32::MAX, ..raw() }).contains("at most 100000"));
        assert!(refused(RawSettings { max_retry_count: -1, ..raw() }).contains("max retry count"));
        assert!(refused(RawSettings { message_timeout_ms: -5, ..raw() }).contains("message timeout"));
        assert!(refused(RawSettings { min_checkpoint_count: 20, max_checkpoint_count: 10, ..raw() })
            .contains("min checkpoint count (20)"));
    }

    #[test]
    fn strategies_parse_by_their_eventstoredb_names() {
        assert_eq!(Strategy::parse("PinnedByCorrelation"), Some(Strategy::PinnedByCorrelation));
        assert_eq!(Strategy::parse("roundrobin"), Some(Strategy::RoundRobin));
        assert_eq!(Strategy::parse("Fastest"), None);
    }
}
