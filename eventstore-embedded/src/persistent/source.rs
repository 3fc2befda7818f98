//! Where a group's events come from and where its progress goes, all in the
//! store itself, as EventStoreDB keeps them: the checkpoint in
//! `$persistentsubscription-<source>::<group>-checkpoint`, parked events as
//! links in `…-parked` (readable by any client), replayed parked events
//! hidden from it by `$tb`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use super::settings::{Source, StartFrom};

/// Where a new group starts, fixed once when it is created: "the end" is the
/// end at that moment, not wherever the source ends when the group is next
/// started (a restart before the first checkpoint would skip what came between).
pub(crate) fn resolve_start(store: &Store, source: &Source, start_from: StartFrom) -> Position {
    match (source, start_from) {
        (_, StartFrom::Start) => 0,
        (_, StartFrom::At(position)) => position,
        (Source::Stream(name), StartFrom::End) => store.last_revision(name).map_or(0, |r| r + 1),
        (Source::All(_), StartFrom::End) => store.last_position().map_or(0, |p| p + 1),
    }
}
use super::GroupKey;
use crate::filter::Filter;
use crate::storage::{Direction, ExpectedRevision, ProposedEvent, ReadError, ReadEvent, Store, StreamFrom};

/// A revision (stream source) or a log position (`$all` source).
pub(crate) type Position = u64;

/// The event type of a link.
const LINK_TYPE: &str = "$>";
/// Events of `$all` scanned per read when a filter drops most of them.
const MAX_SCAN: usize = 4096;

/// One event as the group hands it out.
#[derive(Debug)]
pub(crate) struct Item {
    /// The event, or the event a resolved link points to.
    pub(crate) event: ReadEvent,
    /// The link, when one was resolved.
    pub(crate) link: Option<ReadEvent>,
    /// Where it sits in the source.
    pub(crate) position: Position,
}

impl Item {
    /// The id consumers ack: the link's when there is one, as clients ack the original event.
    pub(crate) fn ack_id(&self) -> Uuid {
        self.link.as_ref().unwrap_or(&self.event).event.id
    }

    /// What a pinned strategy keeps on one consumer: the stream, or the correlation id.
    pub(crate) fn pin_key(&self, by_correlation: bool) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let correlation = by_correlation.then(|| correlation_id(&self.event.event.metadata)).flatten();
        match correlation {
            Some(id) => id.hash(&mut hasher),
            None => self.event.event.stream.hash(&mut hasher),
        }
        hasher.finish()
    }
}

fn correlation_id(metadata: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(metadata).ok()?;
    doc.get("$correlationId")?.as_str().map(str::to_owned)
}

#[derive(Debug, Clone)]
enum From {
    Stream(String),
    All(Option<Filter>),
}

/// Reads a group's source forwards from where the group is.
#[derive(Debug)]
pub(crate) struct Reader {
    store: Arc<Store>,
    from: From,
    /// The next revision (stream) or `$all` sequence number to read.
    next: u64,
    resolve_links: bool,
    resumed_after: Option<Position>,
    live: bool,
}

impl Reader {
    /// Positions a reader after the group's checkpoint, or at `start` (a
    /// revision, or a `$all` position; see [`resolve_start`]).
    pub(crate) async fn open(
        store: &Arc<Store>,
        key: &GroupKey,
        source: &Source,
        start: Position,
        resolve_links: bool,
    ) -> Result<Reader, String> {
        let from = match source {
            Source::Stream(name) => From::Stream(name.clone()),
            Source::All(None) => From::All(None),
            Source::All(Some(spec)) => From::All(Some(
                Filter::new(spec.on_stream, spec.prefixes.clone(), &spec.regex, 1)
                    .map_err(|s| s.message().to_owned())?,
            )),
        };
        let checkpoint = read_checkpoint(store, key).await?;
        let next = match (&from, checkpoint) {
            (From::Stream(_), Some(revision)) => revision + 1,
            (From::All(_), Some(position)) => store.seq_after(position),
            (From::Stream(_), None) => start,
            (From::All(_), None) => store.seq_at_or_after(start),
        };
        Ok(Reader { store: store.clone(), from, next, resolve_links, resumed_after: checkpoint, live: false })
    }

    /// Reads from the event at `position` again (it was read, and put back).
    pub(crate) fn rewind_to(&mut self, position: Position) {
        self.next = match &self.from {
            From::Stream(_) => position,
            From::All(_) => self.store.seq_at_or_after(position),
        };
    }

    /// The checkpoint the reader started after.
    pub(crate) fn resumed_after(&self) -> Option<Position> {
        self.resumed_after
    }

    /// Whether the last read reached the end of the source.
    pub(crate) fn is_live(&self) -> bool {
        self.live
    }

    /// The source's last event, as EventStoreDB reports it.
    pub(crate) fn last_known(&self) -> Option<Position> {
        match &self.from {
            From::Stream(name) => self.store.last_revision(name),
            From::All(_) => self.store.last_position(),
        }
    }

    /// Reads up to `limit` events, `batch` at a time; says whether the source's end was reached.
    pub(crate) async fn read(&mut self, limit: usize, batch: usize) -> Result<(Vec<Item>, bool), String> {
        let store = self.store.clone();
        let from = self.from.clone();
        let (next, resolve) = (self.next, self.resolve_links);
        let (items, next, at_end) =
            tokio::task::spawn_blocking(move || read_source(&store, &from, next, limit, batch, resolve))
                .await
                .map_err(|e| format!("read task failed: {e}"))??;
        self.next = next;
        self.live = at_end;
        Ok((items, at_end))
    }
}

/// Events of `$all` one read may scan, so a filter that keeps almost nothing
/// does not hold the group (and its acks) for a whole pass over the log.
const MAX_SCAN_PER_READ: usize = 16 * MAX_SCAN;

fn read_source(
    store: &Store,
    from: &From,
    mut next: u64,
    limit: usize,
    batch: usize,
    resolve: bool,
) -> Result<(Vec<Item>, u64, bool), String> {
    let mut items = Vec::new();
    let mut scanned = 0;
    while items.len() < limit && scanned < MAX_SCAN_PER_READ {
        let want = batch.min(limit - items.len());
        let (events, reached_end) = match from {
            From::Stream(name) => {
                match store.read_stream(name, StreamFrom::Revision(next), Direction::Forwards, want) {
                    Ok(page) => {
                        if let Some(last) = page.events.last() {
                            next = last.event.revision + 1;
                        }
                        scanned += page.events.len();
                        let end = page.events.len() < want;
                        (page.events.into_iter().map(|e| (e.event.revision, e)).collect::<Vec<_>>(), end)
                    }
                    Err(ReadError::NotFound | ReadError::Deleted) => (Vec::new(), true),
                    Err(ReadError::Io(e)) => return Err(e.to_string()),
                }
            }
            From::All(filter) => {
                // A regex that gives up is an error, never a "no": the event would be skipped for good.
                let failed = std::cell::RefCell::new(None);
                let keep = |stream: &str| match filter {
                    Some(f) if f.on_stream => f.matches(stream).unwrap_or_else(|e| {
                        failed.borrow_mut().get_or_insert_with(|| e.message().to_owned());
                        false
                    }),
                    _ => true,
                };
                let page =
                    store.scan_all(next, Direction::Forwards, want, MAX_SCAN, &keep).map_err(|e| e.to_string())?;
                if let Some(error) = failed.into_inner() {
                    return Err(error);
                }
                scanned += page.scanned;
                let end = page.scanned < MAX_SCAN && page.events.len() < want;
                let mut events = Vec::with_capacity(page.events.len());
                for e in page.events {
                    let kept = match filter {
                        Some(f) if !f.on_stream => {
                            f.matches(&e.event.event_type).map_err(|s| s.message().to_owned())?
                        }
                        _ => true,
                    };
                    if kept {
                        events.push((e.position, e));
                    }
                }
                next = page.next;
                (events, end)
            }
        };
        for (position, event) in events {
            items.push(resolved(store, event, position, resolve));
        }
        if reached_end {
            return Ok((items, next, true));
        }
    }
    Ok((items, next, false))
}

/// The item for `event`, with the link resolved when asked and possible.
fn resolved(store: &Store, event: ReadEvent, position: Position, resolve: bool) -> Item {
    if resolve && event.event.event_type == LINK_TYPE {
        if let Some(target) = link_target(store, &event.event.data) {
            return Item { event: target, link: Some(event), position };
        }
    }
    Item { event, link: None, position }
}

/// The event a link's data (`revision@stream`) points to, if it can be read.
fn link_target(store: &Store, data: &[u8]) -> Option<ReadEvent> {
    let text = std::str::from_utf8(data).ok()?;
    let (revision, stream) = text.split_once('@')?;
    let revision: u64 = revision.parse().ok()?;
    let page = store.read_stream(stream, StreamFrom::Revision(revision), Direction::Forwards, 1).ok()?;
    page.events.into_iter().next().filter(|e| e.event.revision == revision)
}

pub(crate) fn checkpoint_stream(key: &GroupKey) -> String {
    format!("$persistentsubscription-{}::{}-checkpoint", key.source, key.group)
}

pub(crate) fn parked_stream(key: &GroupKey) -> String {
    format!("$persistentsubscription-{}::{}-parked", key.source, key.group)
}

/// How a checkpoint reads in the checkpoint stream and in the group's info:
/// a revision, or `C:<commit>/P:<prepare>` for `$all`.
pub(crate) fn format_position(key: &GroupKey, position: Position) -> String {
    if key.source == "$all" {
        format!("C:{position}/P:{position}")
    } else {
        position.to_string()
    }
}

async fn read_checkpoint(store: &Arc<Store>, key: &GroupKey) -> Result<Option<Position>, String> {
    let stream = checkpoint_stream(key);
    let store = store.clone();
    let last =
        tokio::task::spawn_blocking(move || store.read_stream(&stream, StreamFrom::End, Direction::Backwards, 1))
            .await
            .map_err(|e| e.to_string())?;
    let page = match last {
        Ok(page) => page,
        Err(ReadError::NotFound | ReadError::Deleted) => return Ok(None),
        Err(ReadError::Io(e)) => return Err(e.to_string()),
    };
    let Some(event) = page.events.first() else { return Ok(None) };
    let text: String = serde_json::from_slice(&event.event.data).map_err(|e| format!("unreadable checkpoint: {e}"))?;
    let number = text.strip_prefix("C:").and_then(|t| t.split('/').next()).unwrap_or(&text);
    number.parse().map(Some).map_err(|_| format!("unreadable checkpoint '{text}'"))
}

pub(crate) async fn write_checkpoint(store: &Store, key: &GroupKey, position: Position) -> Result<(), String> {
    let data = serde_json::to_vec(&format_position(key, position)).map_err(|e| e.to_string())?;
    append(store, &checkpoint_stream(key), "$SubscriptionCheckpoint", "application/json", data).await
}

/// Appends a link to `item`'s event to the group's parked stream.
pub(crate) async fn park(store: &Store, key: &GroupKey, item: &Item) -> Result<(), String> {
    let data = format!("{}@{}", item.event.event.revision, item.event.event.stream).into_bytes();
    append(store, &parked_stream(key), LINK_TYPE, "application/octet-stream", data).await
}

async fn append(
    store: &Store,
    stream: &str,
    event_type: &str,
    content_type: &str,
    data: Vec<u8>,
) -> Result<(), String> {
    let event = ProposedEvent {
        id: Uuid::new_v4(),
        event_type: event_type.into(),
        content_type: content_type.into(),
        metadata: Bytes::new(),
        data: Bytes::from(data),
    };
    store.append(stream, ExpectedRevision::Any, vec![event]).await.map(|_| ()).map_err(|e| e.to_string())
}

/// How many parked events the group has (those not yet replayed).
pub(crate) async fn parked_count(store: &Arc<Store>, key: &GroupKey) -> u64 {
    let stream = parked_stream(key);
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let first = store.read_stream(&stream, StreamFrom::Start, Direction::Forwards, 1).ok()?;
        let first = first.events.first()?.event.revision;
        Some(store.last_revision(&stream)? + 1 - first)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// One page of a replay: up to `limit` parked events from revision `from`
/// of the parked stream and below `stop_at` (no bound without it), oldest
/// first, each with its revision there; and where the next page starts,
/// `None` once the replay has read all it was asked for. Links whose event
/// can no longer be read are left out.
pub(crate) async fn read_parked(
    store: &Arc<Store>,
    key: &GroupKey,
    from: u64,
    stop_at: Option<u64>,
    limit: usize,
) -> Result<(Vec<(u64, Item)>, Option<u64>), String> {
    let name = parked_stream(key);
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let page = match store.read_stream(&name, StreamFrom::Revision(from), Direction::Forwards, limit) {
            Ok(page) => page,
            Err(ReadError::NotFound | ReadError::Deleted) => return Ok((Vec::new(), None)),
            Err(ReadError::Io(e)) => return Err(e.to_string()),
        };
        let mut items = Vec::new();
        for link in &page.events {
            let revision = link.event.revision;
            if stop_at.is_some_and(|stop| revision >= stop) {
                return Ok((items, None));
            }
            if let Some(target) = link_target(&store, &link.event.data) {
                items.push((revision, Item { position: target.position, event: target, link: None }));
            }
        }
        let next = match page.events.last() {
            Some(last) if page.events.len() == limit => Some(last.event.revision + 1),
            _ => None,
        };
        Ok((items, next))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Hides the parked stream's events below revision `below` with `$tb`.
pub(crate) async fn hide_parked(store: &Store, key: &GroupKey, below: u64) -> Result<(), String> {
    let metadata = serde_json::to_vec(&serde_json::json!({ "$tb": below })).map_err(|e| e.to_string())?;
    append(store, &format!("$${}", parked_stream(key)), "$metadata", "application/json", metadata).await
}

/// Soft-deletes a group's checkpoint and parked streams, where they hold events.
pub(crate) async fn forget(store: &Store, key: &GroupKey) {
    for stream in [checkpoint_stream(key), parked_stream(key)] {
        if store.read_stream(&stream, StreamFrom::Start, Direction::Forwards, 1).is_err() {
            continue; // never written, or deleted already
        }
        if let Err(e) = store.delete(&stream, ExpectedRevision::Any).await {
            tracing::warn!(%stream, error = %e, "cannot delete a deleted group's stream");
        }
    }
}
