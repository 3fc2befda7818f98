//! Reads and subscriptions: one loop per request, feeding a bounded channel.
//!
//! A subscription is a read that does not stop at the end: it catches up page
//! by page from the log, says `CaughtUp`, then waits for the store's head to
//! move and reads again. Catch-up and live share this one path, so there is no
//! hand-over window in which an event could be missed or sent twice. Each send
//! waits for room in the response channel, so a slow subscriber slows only
//! its own loop; the server never buffers more than a page per subscriber.

use std::cell::Cell;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::convert::{self, IdFormat};
use super::filter::{self, Filter};
use crate::proto::event_store::client::streams::read_req::options::{
    self as opts, all_options::AllOption, stream_options::RevisionOption, CountOption, FilterOption, ReadDirection,
    StreamOption,
};
use crate::proto::event_store::client::streams::{read_resp, ReadResp};
use crate::storage::{Direction, ReadError, ReadEvent, Store, StreamFrom, StreamPage};

/// Batches of responses queued per read before the loop waits for the client.
/// Responses travel in batches (about a page each) to keep the per-event
/// cost of the channel out of the hot path.
pub(crate) const CHANNEL_CAPACITY: usize = 4;
/// Events read from the log per page.
const PAGE: usize = 256;
/// Events scanned per page when a filter rejects most of them.
const MAX_SCAN: usize = 4096;

/// A parsed read request.
#[derive(Debug)]
pub(crate) struct Plan {
    target: Target,
    direction: Direction,
    /// `None` for a subscription.
    count: Option<u64>,
    filter: Option<Filter>,
    ids: IdFormat,
    /// Whether a stream read ends with `last_stream_position` (and, forwards
    /// from past the end, starts with `first_stream_position`). EventStoreDB
    /// sends them to clients that ask for compatibility level 1 or more, as
    /// the Rust client does; the Node.js client does not ask.
    stream_positions: bool,
}

#[derive(Debug)]
enum Target {
    Stream { name: String, from: StreamFrom },
    All { from: AllFrom },
}

#[derive(Debug, Clone, Copy)]
enum AllFrom {
    Start,
    End,
    Position(u64),
}

impl Plan {
    pub(crate) fn parse(
        options: crate::proto::event_store::client::streams::read_req::Options,
    ) -> Result<Plan, Status> {
        let direction = match ReadDirection::try_from(options.read_direction) {
            Ok(ReadDirection::Backwards) => Direction::Backwards,
            _ => Direction::Forwards,
        };
        let count = match options.count_option {
            Some(CountOption::Count(n)) => Some(n),
            Some(CountOption::Subscription(_)) => None,
            None => return Err(Status::invalid_argument("missing count or subscription option")),
        };
        if count.is_none() && direction == Direction::Backwards {
            return Err(Status::invalid_argument("subscriptions can only go forwards"));
        }
        let target = match options.stream_option {
            Some(StreamOption::Stream(s)) => {
                let name = convert::stream_name(s.stream_identifier)?;
                let from = match s.revision_option {
                    Some(RevisionOption::Revision(r)) => StreamFrom::Revision(r),
                    Some(RevisionOption::End(())) => StreamFrom::End,
                    Some(RevisionOption::Start(())) | None => StreamFrom::Start,
                };
                Target::Stream { name, from }
            }
            Some(StreamOption::All(a)) => {
                let from = match a.all_option {
                    Some(AllOption::Position(p)) => AllFrom::Position(p.commit_position),
                    Some(AllOption::End(())) => AllFrom::End,
                    Some(AllOption::Start(())) | None => AllFrom::Start,
                };
                Target::All { from }
            }
            None => return Err(Status::invalid_argument("missing stream or $all option")),
        };
        let filter = match options.filter_option {
            Some(FilterOption::Filter(f)) => Some(filter::parse(f)?),
            Some(FilterOption::NoFilter(())) | None => None,
        };
        if filter.is_some() && matches!(target, Target::Stream { .. }) {
            return Err(Status::invalid_argument("filters apply to $all only"));
        }
        let ids = match options.uuid_option.and_then(|u| u.content) {
            Some(opts::uuid_option::Content::Structured(())) => IdFormat::Structured,
            _ => IdFormat::String,
        };
        let stream_positions = options.control_option.is_some_and(|c| c.compatibility >= 1);
        Ok(Plan { target, direction, count, filter, ids, stream_positions })
    }
}

pub(crate) type Tx = mpsc::Sender<Vec<Result<ReadResp, Status>>>;

/// Why a read loop stopped early.
enum Stop {
    /// The client went away, or the server is shutting down.
    Gone,
    /// The read failed; the client gets this status.
    Failed(Status),
}

/// Runs a read or subscription until it is complete, the client leaves, or the server closes.
pub(crate) async fn run(plan: Plan, store: Arc<Store>, tx: Tx, closing: watch::Receiver<bool>) {
    let mut session =
        Session { store, tx, closing, ids: plan.ids, stream_positions: plan.stream_positions, pending: Vec::new() };
    let outcome = match (&plan.target, plan.count) {
        (Target::Stream { name, from }, Some(count)) => session.read_stream(name, *from, plan.direction, count).await,
        (Target::All { from }, Some(count)) => {
            session.read_all(*from, plan.direction, count, plan.filter.as_ref()).await
        }
        (Target::Stream { name, from }, None) => session.subscribe_stream(name, *from).await,
        (Target::All { from }, None) => session.subscribe_all(*from, plan.filter.as_ref()).await,
    };
    if let Err(Stop::Failed(status)) = outcome {
        session.pending.push(Err(status));
    }
    let _ = session.flush().await;
}

struct Session {
    store: Arc<Store>,
    tx: Tx,
    closing: watch::Receiver<bool>,
    ids: IdFormat,
    /// See [`Plan::stream_positions`].
    stream_positions: bool,
    /// Responses not yet handed to the channel.
    pending: Vec<Result<ReadResp, Status>>,
}

impl Session {
    /// Queues a response; it goes out at the next flush (at the latest at
    /// the end of the page being processed).
    async fn send(&mut self, content: read_resp::Content) -> Result<(), Stop> {
        self.pending.push(Ok(ReadResp { content: Some(content) }));
        if self.pending.len() >= PAGE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn send_event(&mut self, event: &ReadEvent) -> Result<(), Stop> {
        self.send(read_resp::Content::Event(convert::read_event(event, self.ids))).await
    }

    /// Hands the queued responses to the client, waiting for room.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(PAGE));
        self.tx.send(batch).await.map_err(|_| Stop::Gone)
    }

    /// Runs a blocking store call off the async threads.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> T + Send + 'static) -> Result<T, Stop> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Stop::Failed(Status::internal(format!("read task failed: {e}"))))
    }

    /// Waits until the head moves past `seen`, the client leaves, or the server closes.
    async fn wait_for_more(&mut self, head: &mut watch::Receiver<u64>) -> Result<(), Stop> {
        self.flush().await?;
        tokio::select! {
            changed = head.changed() => changed.map_err(|_| Stop::Gone),
            () = self.tx.closed() => Err(Stop::Gone),
            _ = self.closing.wait_for(|closing| *closing) => {
                Err(Stop::Failed(Status::unavailable("the server is shutting down")))
            }
        }
    }

    /// Reads a stream as EventStoreDB does: a missing (or soft-deleted)
    /// stream is a `StreamNotFound` message, a tombstoned one fails the call,
    /// and a read that finds the stream ends with its last revision.
    async fn read_stream(
        &mut self,
        name: &str,
        from: StreamFrom,
        direction: Direction,
        count: u64,
    ) -> Result<(), Stop> {
        let mut from = from;
        let mut left = count;
        let mut last_revision = None;
        while left > 0 {
            let limit = left.min(PAGE as u64) as usize;
            let stream = name.to_owned();
            let page = match self.blocking(move |s| s.read_stream(&stream, from, direction, limit)).await? {
                Ok(page) => page,
                Err(ReadError::NotFound) => {
                    let not_found =
                        read_resp::StreamNotFound { stream_identifier: Some(convert::stream_identifier(name)) };
                    return self.send(read_resp::Content::StreamNotFound(not_found)).await;
                }
                Err(ReadError::Deleted) => return Err(Stop::Failed(convert::stream_deleted(name))),
                Err(ReadError::Io(e)) => return Err(Stop::Failed(convert::unavailable(e))),
            };
            if last_revision.is_none() && direction == Direction::Forwards {
                self.first_stream_position(from, &page).await?;
            }
            last_revision = Some(page.last_revision);
            for event in &page.events {
                self.send_event(event).await?;
            }
            left -= page.events.len() as u64;
            // A short page is the end (forwards) or the start (backwards) of the stream.
            let Some(last) = page.events.last().filter(|_| page.events.len() == limit) else { break };
            from = match direction {
                Direction::Forwards => StreamFrom::Revision(last.event.revision + 1),
                Direction::Backwards if last.event.revision == 0 => break,
                Direction::Backwards => StreamFrom::Revision(last.event.revision - 1),
            };
        }
        match last_revision {
            Some(last) if self.stream_positions => self.send(read_resp::Content::LastStreamPosition(last)).await,
            _ => Ok(()),
        }
    }

    /// Forwards from past the end of a stream, EventStoreDB first says where
    /// the stream's next event will be (`first_stream_position`).
    async fn first_stream_position(&mut self, from: StreamFrom, page: &StreamPage) -> Result<(), Stop> {
        let next = page.last_revision + 1;
        match from {
            StreamFrom::Revision(start) if self.stream_positions && page.events.is_empty() && start > next => {
                self.send(read_resp::Content::FirstStreamPosition(next)).await
            }
            _ => Ok(()),
        }
    }

    async fn read_all(
        &mut self,
        from: AllFrom,
        direction: Direction,
        count: u64,
        filter: Option<&Filter>,
    ) -> Result<(), Stop> {
        let mut cursor = self.all_cursor(from, direction, false).await?;
        let mut left = count;
        while left > 0 {
            let limit = left.min(PAGE as u64) as usize;
            let (page, matched) = self.scan(cursor, direction, limit, MAX_SCAN, filter).await?;
            for event in &matched {
                self.send_event(event).await?;
            }
            left -= matched.len() as u64;
            if page.scanned == 0 {
                break;
            }
            cursor = page.next;
        }
        Ok(())
    }

    async fn subscribe_stream(&mut self, name: &str, from: StreamFrom) -> Result<(), Stop> {
        let mut head = self.store.watch_head();
        head.borrow_and_update();
        let stream = name.to_owned();
        let mut next = match from {
            StreamFrom::Start => 0,
            StreamFrom::Revision(r) => r.saturating_add(1),
            StreamFrom::End => self.blocking(move |s| s.last_revision(&stream).map_or(0, |r| r + 1)).await?,
        };
        self.confirm().await?;
        let mut caught_up = false;
        loop {
            head.borrow_and_update();
            let stream = name.to_owned();
            let page = self
                .blocking(move |s| s.read_stream(&stream, StreamFrom::Revision(next), Direction::Forwards, PAGE))
                .await?;
            let events = match page {
                Ok(page) => page.events,
                Err(ReadError::NotFound) => Vec::new(),
                Err(ReadError::Deleted) => return Err(Stop::Failed(convert::stream_deleted(name))),
                Err(ReadError::Io(e)) => return Err(Stop::Failed(convert::unavailable(e))),
            };
            for event in &events {
                self.send_event(event).await?;
                next = event.event.revision + 1;
            }
            self.flush().await?;
            if events.len() < PAGE {
                if !caught_up {
                    self.send(read_resp::Content::CaughtUp(read_resp::CaughtUp {})).await?;
                    caught_up = true;
                }
                if events.is_empty() {
                    self.wait_for_more(&mut head).await?;
                }
            }
        }
    }

    async fn subscribe_all(&mut self, from: AllFrom, filter: Option<&Filter>) -> Result<(), Stop> {
        let mut head = self.store.watch_head();
        head.borrow_and_update();
        let mut cursor = self.all_cursor(from, Direction::Forwards, true).await?;
        self.confirm().await?;
        let mut caught_up = false;
        let mut since_checkpoint = 0u64;
        let mut unreported: Option<u64> = None;
        loop {
            head.borrow_and_update();
            // With a filter, pages end on checkpoint boundaries.
            let max_scan = filter.map_or(MAX_SCAN, |f| (f.checkpoint_every - since_checkpoint) as usize);
            let (page, matched) = self.scan(cursor, Direction::Forwards, PAGE, max_scan, filter).await?;
            cursor = page.next;
            for event in &matched {
                self.send_event(event).await?;
            }
            self.flush().await?;
            if let Some(filter) = filter {
                since_checkpoint += page.scanned as u64;
                // Only a scanned event the client did not receive needs a checkpoint.
                if page.last_scanned.is_some() {
                    let delivered_last = matched.last().map(|e| e.position) == page.last_scanned;
                    unreported = if delivered_last { None } else { page.last_scanned };
                }
                if since_checkpoint >= filter.checkpoint_every {
                    if let Some(position) = unreported.take() {
                        self.checkpoint(position).await?;
                    }
                    since_checkpoint = 0;
                }
            }
            if page.scanned == 0 {
                // Going idle: report how far the filter has scanned, so a
                // client waiting on a position it filters out is not kept
                // waiting for the next window.
                if let (Some(_), Some(position)) = (filter, unreported.take()) {
                    self.checkpoint(position).await?;
                    since_checkpoint = 0;
                }
                if !caught_up {
                    self.send(read_resp::Content::CaughtUp(read_resp::CaughtUp {})).await?;
                    caught_up = true;
                }
                self.wait_for_more(&mut head).await?;
            }
        }
    }

    async fn confirm(&mut self) -> Result<(), Stop> {
        let id = uuid::Uuid::new_v4().to_string();
        self.send(read_resp::Content::Confirmation(read_resp::SubscriptionConfirmation { subscription_id: id })).await
    }

    async fn checkpoint(&mut self, position: u64) -> Result<(), Stop> {
        self.send(read_resp::Content::Checkpoint(read_resp::Checkpoint {
            commit_position: position,
            prepare_position: position,
        }))
        .await
    }

    /// The `$all` cursor for a start point. Reads include the event at a given
    /// position (forwards) or stop just before it (backwards); subscriptions
    /// start after it.
    async fn all_cursor(&self, from: AllFrom, direction: Direction, exclusive: bool) -> Result<u64, Stop> {
        self.blocking(move |s| match (from, direction) {
            (AllFrom::Start, Direction::Forwards) => 0,
            (AllFrom::Start, Direction::Backwards) => 0,
            (AllFrom::End, _) => s.head(),
            (AllFrom::Position(p), Direction::Forwards) if exclusive => s.seq_after(p),
            (AllFrom::Position(p), _) => s.seq_at_or_after(p),
        })
        .await
    }

    /// Scans one page of `$all` and applies the filter.
    async fn scan(
        &self,
        cursor: u64,
        direction: Direction,
        limit: usize,
        max_scan: usize,
        filter: Option<&Filter>,
    ) -> Result<(crate::storage::AllPage, Vec<ReadEvent>), Stop> {
        let stream_filter = filter.filter(|f| f.on_stream).cloned();
        let scanned = self
            .blocking(move |s| {
                // The store asks yes or no; a regex that gives up is kept
                // aside and fails the read once the scan returns.
                let failure = Cell::new(None);
                let keep = |name: &str| match stream_filter.as_ref().map_or(Ok(true), |f| f.matches(name)) {
                    Ok(keep) => keep,
                    Err(status) => {
                        failure.set(Some(status));
                        false
                    }
                };
                let page = s.scan_all(cursor, direction, limit, max_scan, &keep);
                (page, failure.into_inner())
            })
            .await?;
        let mut page = match scanned {
            (_, Some(status)) => return Err(Stop::Failed(status)),
            (page, None) => page.map_err(|e| Stop::Failed(convert::unavailable(e)))?,
        };
        let mut matched = std::mem::take(&mut page.events);
        if let Some(f) = filter.filter(|f| !f.on_stream) {
            matched = keep_event_types(matched, f).map_err(Stop::Failed)?;
        }
        Ok((page, matched))
    }
}

/// The events whose type passes an event-type filter.
fn keep_event_types(events: Vec<ReadEvent>, filter: &Filter) -> Result<Vec<ReadEvent>, Status> {
    let mut kept = Vec::with_capacity(events.len());
    for event in events {
        if filter.matches(&event.event.event_type)? {
            kept.push(event);
        }
    }
    Ok(kept)
}
