//! Server-side filters of `$all` reads and subscriptions: prefixes or a regex,
//! on the stream name or the event type.
//!
//! EventStoreDB compiles filter regexes with .NET's engine, and clients rely
//! on its features: a client that hides system streams sends the negative
//! lookahead `^(?!(\$.+$|PersistentConfig\d+$|Result$))` with every read.
//! The matching itself is in `crate::filter`, shared with persistent
//! subscriptions to `$all`.

use tonic::Status;

pub(super) use crate::filter::Filter;
use crate::proto::event_store::client::streams::read_req::options::{self as opts, filter_options};

/// The filter window when the client does not set one (EventStoreDB's default).
const DEFAULT_WINDOW: u32 = 32;

/// Parses the filter options of a read request.
pub(super) fn parse(f: opts::FilterOptions) -> Result<Filter, Status> {
    let (on_stream, expression) = match f.filter {
        Some(filter_options::Filter::StreamIdentifier(e)) => (true, e),
        Some(filter_options::Filter::EventType(e)) => (false, e),
        None => return Err(Status::invalid_argument("filter has neither a stream nor an event-type expression")),
    };
    let window = match f.window {
        Some(filter_options::Window::Max(n)) if n > 0 => n,
        _ => DEFAULT_WINDOW,
    };
    let checkpoint_every = u64::from(window) * u64::from(f.checkpoint_interval_multiplier.max(1));
    Filter::new(on_stream, expression.prefix, &expression.regex, checkpoint_every)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;
    use tonic::Request;

    use super::super::streams::StreamsService;
    use super::*;
    use crate::proto::event_store::client::streams::read_req::{self, options::ReadDirection};
    use crate::proto::event_store::client::streams::streams_server::Streams;
    use crate::proto::event_store::client::streams::{read_resp, ReadReq};
    use crate::storage::{ExpectedRevision, ProposedEvent, Store, StoreConfig};

    fn on_stream(regex: &str) -> Filter {
        let expression = opts::filter_options::Expression { regex: regex.into(), prefix: Vec::new() };
        let options = opts::FilterOptions {
            filter: Some(filter_options::Filter::StreamIdentifier(expression)),
            ..Default::default()
        };
        parse(options).expect("a valid filter")
    }

    #[test]
    fn the_system_stream_exclusion_clients_send_keeps_only_user_streams() {
        let filter = on_stream(r"^(?!(\$.+$|PersistentConfig\d+$|Result$))");
        for user in ["order-1", "Results", "PersistentConfig", "x$y"] {
            assert_eq!(filter.matches(user).ok(), Some(true), "{user}");
        }
        for system in ["$et-Counted", "$sys-test", "PersistentConfig1", "Result"] {
            assert_eq!(filter.matches(system).ok(), Some(false), "{system}");
        }
    }

    #[test]
    fn a_pattern_that_cannot_be_parsed_is_an_invalid_argument() {
        let expression = opts::filter_options::Expression { regex: "(unclosed".into(), prefix: Vec::new() };
        let options =
            opts::FilterOptions { filter: Some(filter_options::Filter::EventType(expression)), ..Default::default() };
        let status = parse(options).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("invalid filter regex '(unclosed'"), "{}", status.message());
    }

    #[tokio::test]
    async fn filtered_reads_of_all_keep_what_the_regex_keeps_in_both_directions() {
        // The official Rust client cannot filter a read of `$all` (only a
        // subscription), so this read goes through the service handler.
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig { data_dir: dir.path().into(), max_append_size: 1 << 20 };
        let store = Arc::new(Store::open(&config).expect("open"));
        for (stream, event_type) in [
            ("$sys-test", "Counted"),
            ("order-1", "OrderPlaced"),
            ("PersistentConfig1", "Counted"),
            ("Result", "Counted"),
            ("order-2", "OrderPaid"),
            ("Results", "OrderPlacedLate"),
        ] {
            store.append(stream, ExpectedRevision::Any, vec![proposed(event_type)]).await.expect("append");
        }
        let (_closing_tx, closing) = tokio::sync::watch::channel(false);
        let service =
            StreamsService { store, max_append_size: 1 << 20, closing, in_flight: super::super::InFlight::new() };
        let exclude_system = r"^(?!(\$.+$|PersistentConfig\d+$|Result$))";

        let forwards = read_all(&service, ReadDirection::Forwards, stream_name(exclude_system)).await;
        assert_eq!(forwards.expect("read"), ["order-1", "order-2", "Results"]);
        let backwards = read_all(&service, ReadDirection::Backwards, stream_name(exclude_system)).await;
        assert_eq!(backwards.expect("read"), ["Results", "order-2", "order-1"]);
        let placed = read_all(&service, ReadDirection::Forwards, event_type(r"^Order(?=Placed$)")).await;
        assert_eq!(placed.expect("read"), ["order-1"]);
        let invalid = read_all(&service, ReadDirection::Forwards, event_type("(?<!unclosed")).await;
        assert_eq!(invalid.expect_err("refused").code(), tonic::Code::InvalidArgument);
    }

    fn proposed(event_type: &str) -> ProposedEvent {
        ProposedEvent {
            id: uuid::Uuid::new_v4(),
            event_type: event_type.into(),
            content_type: "application/json".into(),
            metadata: bytes::Bytes::new(),
            data: bytes::Bytes::from_static(b"{}"),
        }
    }

    fn stream_name(regex: &str) -> filter_options::Filter {
        filter_options::Filter::StreamIdentifier(opts::filter_options::Expression {
            regex: regex.into(),
            prefix: Vec::new(),
        })
    }

    fn event_type(regex: &str) -> filter_options::Filter {
        filter_options::Filter::EventType(opts::filter_options::Expression { regex: regex.into(), prefix: Vec::new() })
    }

    /// Reads all of `$all` with a filter; the stream of each event.
    async fn read_all(
        service: &StreamsService,
        direction: ReadDirection,
        filter: filter_options::Filter,
    ) -> Result<Vec<String>, Status> {
        let start = match direction {
            ReadDirection::Forwards => opts::all_options::AllOption::Start(()),
            ReadDirection::Backwards => opts::all_options::AllOption::End(()),
        };
        let options = read_req::Options {
            read_direction: direction.into(),
            stream_option: Some(opts::StreamOption::All(opts::AllOptions { all_option: Some(start) })),
            count_option: Some(opts::CountOption::Count(100)),
            filter_option: Some(opts::FilterOption::Filter(opts::FilterOptions {
                filter: Some(filter),
                ..Default::default()
            })),
            ..Default::default()
        };
        let responses = service.read(Request::new(ReadReq { options: Some(options) })).await?.into_inner();
        let responses: Vec<_> = responses.collect().await;
        let mut streams = Vec::new();
        for response in responses {
            if let Some(read_resp::Content::Event(e)) = response?.content {
                let name = e.event.and_then(|e| e.stream_identifier).expect("a stream").stream_name;
                streams.push(String::from_utf8(name.to_vec()).expect("utf-8"));
            }
        }
        Ok(streams)
    }

    #[test]
    fn a_regex_that_gives_up_fails_instead_of_not_matching() {
        // The backreference keeps this on the backtracking engine, where
        // nested repetition is exponential in the length of the input.
        let filter = on_stream(r"^(a|a)*\1b");
        let status = filter.matches(&"a".repeat(40)).expect_err("gives up");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("gave up on"), "{}", status.message());
    }
}
