//! The `PersistentSubscriptions` service: the wire shapes of EventStoreDB's
//! consumer groups, translated to and from `crate::persistent`.
//!
//! Errors carry the `exception` trailer both official clients read
//! (`persistent-subscription-exists`, `…-does-not-exist`, `…-dropped`,
//! `maximum-subscribers-reached`) beside the status code the Rust client
//! maps (`ALREADY_EXISTS`, `NOT_FOUND`).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert::{self, IdFormat};
use super::InFlight;
use crate::persistent::{
    format_position, Delivery, Dropped, FilterSpec, GroupInfo, GroupKey, Item, Nack, PsError, RawSettings, Settings,
    Source, StartFrom, Strategy, Subsystem,
};
use crate::proto::event_store::client::persistent_subscriptions::{
    self as ps, create_req, list_req, persistent_subscriptions_server::PersistentSubscriptions, read_req, read_resp,
    replay_parked_req, subscription_info, update_req, CreateReq, CreateResp, DeleteReq, DeleteResp, GetInfoReq,
    GetInfoResp, ListReq, ListResp, ReadReq, ReadResp, ReplayParkedReq, ReplayParkedResp, SubscriptionInfo, UpdateReq,
    UpdateResp,
};

/// The service, over the server's one [`Subsystem`].
#[derive(Debug, Clone)]
pub(crate) struct PersistentService {
    pub(crate) subsystem: Arc<Subsystem>,
    pub(crate) in_flight: InFlight,
}

/// Create and update carry the same settings in two generated types.
macro_rules! raw_settings {
    ($($settings:ident)::+, $raw:expr) => {{
        let raw = &$raw;
        RawSettings {
            message_timeout_ms: match raw.message_timeout {
                Some($($settings)::+::MessageTimeout::MessageTimeoutMs(ms)) => ms.into(),
                Some($($settings)::+::MessageTimeout::MessageTimeoutTicks(t)) => t / 10_000,
                None => Settings::default().message_timeout_ms.into(),
            },
            checkpoint_after_ms: match raw.checkpoint_after {
                Some($($settings)::+::CheckpointAfter::CheckpointAfterMs(ms)) => ms.into(),
                Some($($settings)::+::CheckpointAfter::CheckpointAfterTicks(t)) => t / 10_000,
                None => Settings::default().checkpoint_after_ms.into(),
            },
            max_retry_count: raw.max_retry_count,
            live_buffer_size: raw.live_buffer_size,
            read_batch_size: raw.read_batch_size,
            history_buffer_size: raw.history_buffer_size,
            min_checkpoint_count: raw.min_checkpoint_count,
            max_checkpoint_count: raw.max_checkpoint_count,
            max_subscriber_count: raw.max_subscriber_count,
        }
    }};
}

/// Where a group starts, from either request's revision or position option.
macro_rules! start_from {
    ($($option:ident)::+, $at:ident, $value:expr, $position:expr) => {{
        match $value {
            Some($($option)::+::$at(p)) => StartFrom::At(($position)(p)),
            Some($($option)::+::Start(())) => StartFrom::Start,
            Some($($option)::+::End(())) | None => StartFrom::End,
        }
    }};
}

/// The source a request names: a stream, or `$all` (each request has an
/// option type of its own).
macro_rules! source_of {
    ($($option:ident)::+, $value:expr) => {
        match $value {
            Some($($option)::+::StreamIdentifier(id)) => named_stream(Some(id))?,
            Some($($option)::+::All(())) => "$all".to_owned(),
            None => return Err(missing("stream")),
        }
    };
}

type Events = Pin<Box<dyn Stream<Item = Result<ReadResp, Status>> + Send>>;

/// A stream group's start in the deprecated `settings.revision` (the Node
/// client still sends it there): `u64::MAX` is the end, as EventStoreDB's
/// `StreamRevision.End`.
fn legacy_start(revision: u64) -> StartFrom {
    if revision == u64::MAX {
        StartFrom::End
    } else {
        StartFrom::At(revision)
    }
}

#[tonic::async_trait]
impl PersistentSubscriptions for PersistentService {
    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        let options = request.into_inner().options.ok_or_else(|| missing("options"))?;
        let raw = options.settings.unwrap_or_default();
        let (source, start_from) = match options.stream_option {
            Some(create_req::options::StreamOption::Stream(s)) => {
                let start = start_from!(create_req::stream_options::RevisionOption, Revision, s.revision_option, |r| r);
                (Source::Stream(named_stream(s.stream_identifier)?), start)
            }
            Some(create_req::options::StreamOption::All(a)) => {
                let start = start_from!(
                    create_req::all_options::AllOption,
                    Position,
                    a.all_option,
                    |p: create_req::Position| p.commit_position
                );
                let filter = match a.filter_option {
                    Some(create_req::all_options::FilterOption::Filter(f)) => Some(filter_spec(f)?),
                    _ => None,
                };
                (Source::All(filter), start)
            }
            // Clients older than 21.10 name the stream here and the start in the settings.
            #[allow(deprecated)]
            None => (Source::Stream(named_stream(options.stream_identifier)?), legacy_start(raw.revision)),
        };
        #[allow(deprecated)]
        let strategy = match raw.consumer_strategy.as_str() {
            "" => named_strategy(raw.named_consumer_strategy)?,
            name => Strategy::parse(name)
                .ok_or_else(|| Status::invalid_argument(format!("unknown consumer strategy '{name}'")))?,
        };
        let numbers = raw_settings!(create_req::settings, raw);
        let settings = numbers
            .check(start_from, raw.resolve_links, raw.extra_statistics, strategy)
            .map_err(Status::invalid_argument)?;
        let key = group_key(source.name(), options.group_name)?;
        self.subsystem.create(key, source, settings).await.map_err(status)?;
        Ok(Response::new(CreateResp {}))
    }

    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        let options = request.into_inner().options.ok_or_else(|| missing("options"))?;
        let raw = options.settings.unwrap_or_default();
        let (source, start_from) = match options.stream_option {
            Some(update_req::options::StreamOption::Stream(s)) => {
                let start = start_from!(update_req::stream_options::RevisionOption, Revision, s.revision_option, |r| r);
                (named_stream(s.stream_identifier)?, start)
            }
            Some(update_req::options::StreamOption::All(a)) => {
                let start = start_from!(
                    update_req::all_options::AllOption,
                    Position,
                    a.all_option,
                    |p: update_req::Position| p.commit_position
                );
                ("$all".to_owned(), start)
            }
            #[allow(deprecated)]
            None => (named_stream(options.stream_identifier)?, legacy_start(raw.revision)),
        };
        let numbers = raw_settings!(update_req::settings, raw);
        let strategy = named_strategy(raw.named_consumer_strategy)?;
        let settings = numbers
            .check(start_from, raw.resolve_links, raw.extra_statistics, strategy)
            .map_err(Status::invalid_argument)?;
        self.subsystem.update(group_key(&source, options.group_name)?, settings).await.map_err(status)?;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        use ps::delete_req::options::StreamOption;
        let options = request.into_inner().options.ok_or_else(|| missing("options"))?;
        let source = source_of!(StreamOption, options.stream_option);
        self.subsystem.delete(group_key(&source, options.group_name)?).await.map_err(status)?;
        Ok(Response::new(DeleteResp {}))
    }

    type ReadStream = Events;

    async fn read(&self, request: Request<Streaming<ReadReq>>) -> Result<Response<Events>, Status> {
        let from = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| missing("options"))?;
        let Some(read_req::Content::Options(options)) = first.content else {
            return Err(Status::invalid_argument("the first message of a persistent subscription must be its options"));
        };
        let source = source_of!(read_req::options::StreamOption, options.stream_option);
        let ids = match options.uuid_option.and_then(|o| o.content) {
            Some(read_req::options::uuid_option::Content::Structured(())) => IdFormat::Structured,
            _ => IdFormat::String,
        };
        let buffer_size = u32::try_from(options.buffer_size).ok().filter(|n| *n > 0).ok_or_else(|| {
            Status::invalid_argument(format!("buffer size must be greater than 0, not {}", options.buffer_size))
        })?;
        let buffer_size = buffer_size.min(MAX_BUFFER_SIZE);
        let key = group_key(&source, options.group_name)?;
        let consumer = self.subsystem.join(key.clone(), buffer_size, from, String::new()).await.map_err(status)?;
        let answers = consumer.answers;
        tokio::spawn(async move {
            // Acks and nacks until the client closes its side; dropping `answers` leaves the group.
            while let Ok(Some(message)) = inbound.message().await {
                match message.content {
                    Some(read_req::Content::Ack(ack)) => answers.ack(uuids(ack.ids)),
                    Some(read_req::Content::Nack(nack)) => {
                        let action = match read_req::nack::Action::try_from(nack.action) {
                            Ok(read_req::nack::Action::Park) => Nack::Park,
                            Ok(read_req::nack::Action::Skip) => Nack::Skip,
                            Ok(read_req::nack::Action::Stop) => Nack::Stop,
                            _ => Nack::Retry,
                        };
                        answers.nack(uuids(nack.ids), action);
                    }
                    _ => {}
                }
            }
        });
        let confirmation = ReadResp {
            content: Some(read_resp::Content::SubscriptionConfirmation(read_resp::SubscriptionConfirmation {
                subscription_id: key.to_string(),
            })),
        };
        let guard = self.in_flight.enter();
        let events = UnboundedReceiverStream::new(consumer.deliveries).map(move |delivery| {
            let _held_until_the_stream_ends = &guard;
            match delivery {
                Delivery::Event { item, retry_count } => {
                    Ok(ReadResp { content: Some(read_resp::Content::Event(read_event(&item, retry_count, ids))) })
                }
                Delivery::Dropped(reason) => Err(dropped(&key, reason)),
            }
        });
        Ok(Response::new(Box::pin(futures::stream::once(async { Ok(confirmation) }).chain(events))))
    }

    async fn get_info(&self, request: Request<GetInfoReq>) -> Result<Response<GetInfoResp>, Status> {
        use ps::get_info_req::options::StreamOption;
        let options = request.into_inner().options.ok_or_else(|| missing("options"))?;
        let source = source_of!(StreamOption, options.stream_option);
        let info = self.subsystem.info(group_key(&source, options.group_name)?).await.map_err(status)?;
        Ok(Response::new(GetInfoResp { subscription_info: Some(subscription_info(info)) }))
    }

    async fn replay_parked(&self, request: Request<ReplayParkedReq>) -> Result<Response<ReplayParkedResp>, Status> {
        use replay_parked_req::options::{StopAtOption, StreamOption};
        let options = request.into_inner().options.ok_or_else(|| missing("options"))?;
        let source = source_of!(StreamOption, options.stream_option);
        let stop_at = match options.stop_at_option {
            Some(StopAtOption::StopAt(n)) => Some(
                u64::try_from(n)
                    .map_err(|_| Status::invalid_argument(format!("stop at must not be negative, not {n}")))?,
            ),
            Some(StopAtOption::NoLimit(())) | None => None,
        };
        self.subsystem.replay_parked(group_key(&source, options.group_name)?, stop_at).await.map_err(status)?;
        Ok(Response::new(ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ListReq>) -> Result<Response<ListResp>, Status> {
        use list_req::options::ListOption;
        use list_req::stream_option::StreamOption;
        let options = request.into_inner().options.ok_or_else(|| missing("options"))?;
        let source = match options.list_option {
            Some(ListOption::ListAllSubscriptions(())) | None => None,
            Some(ListOption::ListForStream(s)) => match s.stream_option {
                Some(StreamOption::Stream(id)) => Some(named_stream(Some(id))?),
                Some(StreamOption::All(())) => Some("$all".to_owned()),
                None => return Err(missing("stream")),
            },
        };
        let infos = self.subsystem.list(source.as_deref()).await.map_err(status)?;
        Ok(Response::new(ListResp { subscriptions: infos.into_iter().map(subscription_info).collect() }))
    }

    async fn restart_subsystem(&self, _: Request<()>) -> Result<Response<()>, Status> {
        self.subsystem.restart().await.map_err(status)?;
        Ok(Response::new(()))
    }
}

/// A stream named in a request; `$all` has an option of its own, and a
/// stream by that name would share its groups' names and positions.
fn named_stream(id: Option<crate::proto::event_store::client::StreamIdentifier>) -> Result<String, Status> {
    let name = convert::stream_name(id)?;
    if name == "$all" {
        return Err(Status::invalid_argument("'$all' is not a stream: use the request's $all option"));
    }
    Ok(name)
}

/// The most unacked events one consumer may hold: a client asking for more
/// gets this many, so one call cannot make the server buffer its whole source.
const MAX_BUFFER_SIZE: u32 = 10_000;

fn missing(what: &str) -> Status {
    Status::invalid_argument(format!("the request has no {what}"))
}

fn group_key(source: &str, group: String) -> Result<GroupKey, Status> {
    if group.is_empty() {
        return Err(Status::invalid_argument("the group name must not be empty"));
    }
    if source.is_empty() {
        return Err(Status::invalid_argument("the stream name must not be empty"));
    }
    Ok(GroupKey { source: source.to_owned(), group })
}

fn named_strategy(value: i32) -> Result<Strategy, Status> {
    match create_req::ConsumerStrategy::try_from(value) {
        Ok(create_req::ConsumerStrategy::DispatchToSingle) => Ok(Strategy::DispatchToSingle),
        Ok(create_req::ConsumerStrategy::RoundRobin) => Ok(Strategy::RoundRobin),
        Ok(create_req::ConsumerStrategy::Pinned) => Ok(Strategy::Pinned),
        Err(_) => Err(Status::invalid_argument(format!("unknown consumer strategy {value}"))),
    }
}

fn filter_spec(f: create_req::all_options::FilterOptions) -> Result<FilterSpec, Status> {
    use create_req::all_options::filter_options::Filter;
    let (on_stream, expression) = match f.filter {
        Some(Filter::StreamIdentifier(e)) => (true, e),
        Some(Filter::EventType(e)) => (false, e),
        None => return Err(Status::invalid_argument("filter has neither a stream nor an event-type expression")),
    };
    // Compiled once here so a bad pattern is refused at creation, not at the first read.
    crate::filter::Filter::new(on_stream, expression.prefix.clone(), &expression.regex, 1)?;
    Ok(FilterSpec { on_stream, prefixes: expression.prefix, regex: expression.regex })
}

fn uuids(ids: Vec<crate::proto::event_store::client::Uuid>) -> Vec<uuid::Uuid> {
    ids.into_iter().filter_map(|id| convert::uuid_from_wire(Some(id)).ok()).collect()
}

fn status(error: PsError) -> Status {
    let names = |key: &GroupKey| [("stream-name", key.source.clone()), ("group-name", key.group.clone())];
    match &error {
        PsError::Exists(key) => {
            convert::exception(Code::AlreadyExists, error.to_string(), "persistent-subscription-exists", &names(key))
        }
        PsError::NotFound(key) => {
            convert::exception(Code::NotFound, error.to_string(), "persistent-subscription-does-not-exist", &names(key))
        }
        PsError::NoGroups(source) => convert::exception(
            Code::NotFound,
            error.to_string(),
            "persistent-subscription-does-not-exist",
            &[("stream-name", source.clone()), ("group-name", String::new())],
        ),
        PsError::Full(key, _) => {
            convert::exception(Code::FailedPrecondition, error.to_string(), "maximum-subscribers-reached", &names(key))
        }
        PsError::Invalid(message) => Status::invalid_argument(message.clone()),
        PsError::Unavailable(message) => convert::unavailable(message),
    }
}

fn dropped(key: &GroupKey, reason: Dropped) -> Status {
    let why = match reason {
        Dropped::ShuttingDown => return convert::unavailable("the server is shutting down"),
        Dropped::Deleted => "the group was deleted",
        Dropped::Updated => "the group's settings were updated",
        Dropped::Stopped => "a consumer nacked with stop",
        Dropped::Restarted => "the persistent subscriptions were restarted",
    };
    let names = [("stream-name", key.source.clone()), ("group-name", key.group.clone()), ("reason", why.to_owned())];
    convert::exception(
        Code::Cancelled,
        format!("subscription group '{key}' dropped: {why}"),
        "persistent-subscription-dropped",
        &names,
    )
}

fn read_event(item: &Item, retry_count: u32, ids: IdFormat) -> read_resp::ReadEvent {
    let recorded = |event| {
        let wire = convert::read_event(event, ids).event.unwrap_or_default();
        read_resp::read_event::RecordedEvent {
            id: wire.id,
            stream_identifier: wire.stream_identifier,
            stream_revision: wire.stream_revision,
            prepare_position: wire.prepare_position,
            commit_position: wire.commit_position,
            metadata: wire.metadata,
            custom_metadata: wire.custom_metadata,
            data: wire.data,
        }
    };
    let original = item.link.as_ref().unwrap_or(&item.event);
    read_resp::ReadEvent {
        event: Some(recorded(&item.event)),
        link: item.link.as_ref().map(recorded),
        position: Some(read_resp::read_event::Position::CommitPosition(original.position)),
        count: Some(read_resp::read_event::Count::RetryCount(retry_count as i32)),
    }
}

fn subscription_info(info: GroupInfo) -> SubscriptionInfo {
    let key = &info.key;
    let s = &info.settings;
    let position = |p: Option<u64>| p.map(|p| format_position(key, p)).unwrap_or_default();
    let start_from = match (s.start_from, key.source == "$all") {
        (StartFrom::Start, false) => "0".to_owned(),
        (StartFrom::Start, true) => "C:0/P:0".to_owned(),
        (StartFrom::End, false) => "-1".to_owned(),
        (StartFrom::End, true) => "C:-1/P:-1".to_owned(),
        (StartFrom::At(p), _) => format_position(key, p),
    };
    let connections = info
        .connections
        .iter()
        .map(|c| subscription_info::ConnectionInfo {
            from: c.from.clone(),
            username: c.username.clone(),
            average_items_per_second: c.average_per_second,
            total_items: c.total_items as i64,
            count_since_last_measurement: c.count_since_last_measurement as i64,
            observed_measurements: c
                .measurements
                .iter()
                .map(|(k, v)| subscription_info::Measurement { key: (*k).to_owned(), value: *v as i64 })
                .collect(),
            available_slots: c.available_slots as i32,
            in_flight_messages: c.in_flight as i32,
            connection_name: c.from.clone(),
        })
        .collect();
    SubscriptionInfo {
        event_source: key.source.clone(),
        group_name: key.group.clone(),
        status: info.status.to_owned(),
        connections,
        average_per_second: info.average_per_second,
        total_items: info.total_items as i64,
        count_since_last_measurement: info.count_since_last_measurement as i64,
        last_checkpointed_event_position: position(info.last_checkpointed),
        last_known_event_position: position(info.last_known),
        resolve_link_tos: s.resolve_links,
        start_from,
        message_timeout_milliseconds: s.message_timeout_ms as i32,
        extra_statistics: s.extra_statistics,
        max_retry_count: s.max_retry_count as i32,
        live_buffer_size: s.live_buffer_size as i32,
        buffer_size: s.history_buffer_size as i32,
        read_batch_size: s.read_batch_size as i32,
        check_point_after_milliseconds: s.checkpoint_after_ms as i32,
        min_check_point_count: s.min_checkpoint_count as i32,
        max_check_point_count: s.max_checkpoint_count as i32,
        read_buffer_count: info.read_buffer_count as i32,
        live_buffer_count: info.live_buffer_count as i64,
        retry_buffer_count: info.retry_buffer_count as i32,
        total_in_flight_messages: info.in_flight as i32,
        outstanding_messages_count: info.in_flight as i32,
        named_consumer_strategy: s.strategy.name().to_owned(),
        max_subscriber_count: s.max_subscriber_count as i32,
        parked_message_count: info.parked as i64,
    }
}
