//! Server-side filters of `$all`: prefixes or a regex, on the stream name or
//! the event type. Reads, catch-up subscriptions and persistent
//! subscriptions to `$all` share them.
//!
//! EventStoreDB compiles filter regexes with .NET's engine, and clients rely
//! on its features: a client that hides system streams sends the negative
//! lookahead `^(?!(\$.+$|PersistentConfig\d+$|Result$))` with every read.
//! `fancy-regex` accepts lookaround and backreferences, and hands patterns
//! without them to the `regex` engine, so the common case stays as fast as it
//! was. It does not aim at every corner of .NET syntax (no balancing groups,
//! no .NET-only options); a pattern it cannot parse is refused with
//! `INVALID_ARGUMENT`, as EventStoreDB refuses one .NET cannot parse.

// The errors are the `INVALID_ARGUMENT` statuses the gRPC calls answer with.
#![allow(clippy::result_large_err)]

use fancy_regex::Regex;
use tonic::Status;

/// A compiled filter.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    /// On the stream name; otherwise on the event type.
    pub(crate) on_stream: bool,
    prefixes: Vec<String>,
    regex: Option<Regex>,
    /// Send a checkpoint after this many events scanned (subscriptions only).
    pub(crate) checkpoint_every: u64,
}

impl Filter {
    /// Compiles a filter; an empty `pattern` means prefixes only.
    pub(crate) fn new(
        on_stream: bool,
        prefixes: Vec<String>,
        pattern: &str,
        checkpoint_every: u64,
    ) -> Result<Filter, Status> {
        let regex = match pattern {
            "" => None,
            pattern => Some(
                Regex::new(pattern)
                    .map_err(|e| Status::invalid_argument(format!("invalid filter regex '{pattern}': {e}")))?,
            ),
        };
        Ok(Filter { on_stream, prefixes, regex, checkpoint_every })
    }

    /// Whether `value` (a stream name or an event type) passes.
    ///
    /// A regex that backtracks too much gives up (fancy-regex's backtrack
    /// limit) instead of matching. EventStoreDB has no such limit, so no
    /// answer is the "right" one; treating it as "no match" would silently
    /// drop events from a subscription (or let system events through an
    /// exclusion), so the read fails instead, with `INVALID_ARGUMENT` naming
    /// the pattern and the value, and the client learns its filter is at fault.
    pub(crate) fn matches(&self, value: &str) -> Result<bool, Status> {
        if self.prefixes.iter().any(|p| value.starts_with(p.as_str())) {
            return Ok(true);
        }
        match &self.regex {
            None => Ok(self.prefixes.is_empty()),
            Some(regex) => regex.is_match(value).map_err(|e| {
                tracing::warn!(pattern = regex.as_str(), value, error = %e, "filter regex gave up");
                Status::invalid_argument(format!("filter regex '{}' gave up on '{value}': {e}", regex.as_str()))
            }),
        }
    }
}
