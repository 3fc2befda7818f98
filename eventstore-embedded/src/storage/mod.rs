//! The event store proper: durable appends with optimistic concurrency, reads
//! by stream and across `$all`, and a head that subscribers wait on.
//!
//! This module knows nothing about gRPC. All writes go through one writer
//! thread (`writer.rs`) which checks expected revisions, groups concurrent
//! appends into one `fsync`, and only then makes the events visible in the
//! index. Reads take the index lock just long enough to copy positions, then
//! read bodies from the file without holding it.

mod index;
mod log;
mod metadata;
mod record;
mod stream_read;
mod writer;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use self::index::Index;
use self::log::EventReader;
pub use self::log::TruncatedTail;
pub use self::record::StoredEvent;
use self::writer::{Command, Write};

/// Errors opening or running the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed; surfaces as a startup error or gRPC `UNAVAILABLE`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// Another process holds the log open; surfaces as a startup error.
    #[error("{0} is locked by another process")]
    Locked(PathBuf),
    /// The file exists but is not an event log; surfaces as a startup error.
    #[error("{0} is not a projector event log")]
    NotALog(PathBuf),
    /// The store has been shut down, or its writer failed; surfaces as gRPC `UNAVAILABLE`.
    #[error("the event store is not accepting writes: {0}")]
    Closed(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io { path: path.to_path_buf(), source }
    }
}

/// The revision an append expects the stream to be at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must not exist (or must have been soft-deleted).
    NoStream,
    /// The stream must have at least one readable event.
    StreamExists,
    /// The stream's last event must have exactly this revision.
    Exact(u64),
}

/// A stream's current revision as reported in a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentRevision {
    /// The stream has no events.
    NoStream,
    /// The revision of the stream's last event.
    Current(u64),
}

/// An event proposed by a client.
#[derive(Debug, Clone)]
pub struct ProposedEvent {
    /// Client-chosen id; retrying an append with the same ids is a no-op.
    pub id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The content type, e.g. `application/json`.
    pub content_type: String,
    /// The client's metadata bytes.
    pub metadata: Bytes,
    /// The payload.
    pub data: Bytes,
}

impl ProposedEvent {
    /// The bytes this event counts against the maximum append size.
    pub fn size(&self) -> usize {
        self.data.len() + self.metadata.len() + self.event_type.len() + self.content_type.len()
    }
}

/// A successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteResult {
    /// The stream's last revision after the write.
    pub current_revision: CurrentRevision,
    /// The log position of the last event written, if any was.
    pub position: Option<u64>,
}

/// Why a write was refused. Nothing is written in any of these cases.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// The stream is not at the expected revision; surfaces as the client's `WrongExpectedVersion`.
    #[error("stream is at {current:?}, append expected {expected:?}")]
    WrongExpectedVersion {
        /// Where the stream is.
        current: CurrentRevision,
        /// What the request expected.
        expected: ExpectedRevision,
    },
    /// The stream was tombstoned; surfaces as `stream-deleted`.
    #[error("stream '{0}' is deleted")]
    StreamDeleted(String),
    /// The events are larger than the configured limit; surfaces as `maximum-append-size-exceeded`.
    #[error("append of {size} bytes exceeds the maximum append size of {max} bytes")]
    TooLarge {
        /// The size of the refused append.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The request itself is malformed; surfaces as `INVALID_ARGUMENT`.
    #[error("{0}")]
    Invalid(String),
    /// The log could not be written or synced; surfaces as `UNAVAILABLE`.
    #[error("the event store cannot write: {0}")]
    Unavailable(String),
}

/// Where to start reading a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrom {
    /// The first readable event.
    Start,
    /// The last event (backwards) or past it (forwards).
    End,
    /// This revision, inclusive.
    Revision(u64),
}

/// Reading direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forwards,
    /// Newest first.
    Backwards,
}

/// Why a stream cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No event at or past `$tb`: never written, soft-deleted, or truncated.
    /// Surfaces as `StreamNotFound`.
    #[error("stream not found")]
    NotFound,
    /// Tombstoned. Surfaces as `stream-deleted`.
    #[error("stream is deleted")]
    Deleted,
    /// The log could not be read. Surfaces as `UNAVAILABLE`.
    #[error("cannot read the event log: {0}")]
    Io(#[from] io::Error),
}

/// An event read back, with where it sits in the log.
#[derive(Debug, Clone)]
pub struct ReadEvent {
    /// Commit and prepare position: the record's offset in the log.
    pub position: u64,
    /// The event.
    pub event: StoredEvent,
}

/// One page of a stream.
#[derive(Debug)]
pub struct StreamPage {
    /// The events read, in reading order.
    pub events: Vec<ReadEvent>,
    /// The revision of the stream's last event when the page was read
    /// (EventStoreDB's `last_stream_position`).
    pub last_revision: u64,
}

/// One page of a `$all` scan.
#[derive(Debug, Default)]
pub struct AllPage {
    /// Events that passed the stream filter, in scan order.
    pub events: Vec<ReadEvent>,
    /// The cursor to continue from (a sequence number in `$all`).
    pub next: u64,
    /// Position of the last event scanned, matched or not.
    pub last_scanned: Option<u64>,
    /// How many events were scanned.
    pub scanned: usize,
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding the log.
    pub data_dir: PathBuf,
    /// Largest accepted append, in bytes of event data, metadata and type.
    pub max_append_size: usize,
}

/// The durable event store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    max_append_size: usize,
    truncated: Option<TruncatedTail>,
}

#[derive(Debug)]
struct Shared {
    index: RwLock<Index>,
    file: File,
    /// Number of events in `$all` that are durable and readable.
    head: watch::Sender<u64>,
}

impl Store {
    /// Opens the store, recovering the log (see [`Store::recovered_tail`]).
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        let recovered = log::open(&config.data_dir)?;
        let events = recovered.index.len();
        tracing::info!(
            path = %log::path_in(&config.data_dir).display(),
            events,
            bytes = recovered.end,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event log opened"
        );
        let (head, _) = watch::channel(events);
        let shared = Arc::new(Shared { index: RwLock::new(recovered.index), file: recovered.file, head });
        let (commands, receiver) = mpsc::channel(4096);
        let writer =
            writer::spawn(shared.clone(), receiver, recovered.end).map_err(|e| StoreError::io(&config.data_dir, e))?;
        Ok(Store {
            shared,
            commands,
            writer: parking_lot::Mutex::new(Some(writer)),
            max_append_size: config.max_append_size,
            truncated: recovered.truncated,
        })
    }

    /// The tail that recovery cut off when the store was opened, if any.
    pub fn recovered_tail(&self) -> Option<&TruncatedTail> {
        self.truncated.as_ref()
    }

    /// Appends events to a stream once the expected revision holds, durably.
    ///
    /// Retrying an append whose events (by id) are already in the stream at
    /// the expected place returns the original result and writes nothing.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<ProposedEvent>,
    ) -> Result<WriteResult, WriteError> {
        check_stream_name(stream)?;
        let size: usize = events.iter().map(ProposedEvent::size).sum();
        if size > self.max_append_size {
            return Err(WriteError::TooLarge { size, max: self.max_append_size });
        }
        for event in &events {
            record::check_lengths(stream, &event.event_type, &event.content_type).map_err(WriteError::Invalid)?;
        }
        self.submit(Write::Append { stream: stream.to_owned(), expected, events }).await
    }

    /// Soft-deletes a stream: its events become unreadable, and a later append
    /// recreates it with revisions continuing where they stopped.
    pub async fn delete(&self, stream: &str, expected: ExpectedRevision) -> Result<WriteResult, WriteError> {
        check_stream_name(stream)?;
        self.submit(Write::Delete { stream: stream.to_owned(), expected }).await
    }

    /// Tombstones a stream: it can never be read or written again.
    pub async fn tombstone(&self, stream: &str, expected: ExpectedRevision) -> Result<WriteResult, WriteError> {
        check_stream_name(stream)?;
        self.submit(Write::Tombstone { stream: stream.to_owned(), expected }).await
    }

    async fn submit(&self, write: Write) -> Result<WriteResult, WriteError> {
        let (reply, response) = oneshot::channel();
        let closed = || WriteError::Unavailable("the event store is shutting down".into());
        self.commands.send(Command::Write(write, reply)).await.map_err(|_| closed())?;
        response.await.map_err(|_| closed())?
    }

    /// Whether the stream is tombstoned.
    pub fn is_tombstoned(&self, stream: &str) -> bool {
        self.shared.index.read().stream(stream).is_some_and(|s| s.tombstone.is_some())
    }

    /// The revision of a stream's last event, readable or not.
    pub fn last_revision(&self, stream: &str) -> Option<u64> {
        self.shared.index.read().stream(stream).and_then(|s| s.last_revision())
    }

    /// The `$all` cursor (sequence number) of the first event at or after `position`.
    pub fn seq_at_or_after(&self, position: u64) -> u64 {
        self.shared.index.read().seq_before(position)
    }

    /// The `$all` cursor just after the event at `position` (exclusive start).
    pub fn seq_after(&self, position: u64) -> u64 {
        self.shared.index.read().seq_before(position.saturating_add(1))
    }

    /// Scans up to `max_scan` events of `$all` from `cursor` and returns at most
    /// `limit` of those whose stream passes `keep`. Forwards, `cursor` is the
    /// first sequence number to scan; backwards, it is one past the first.
    pub fn scan_all(
        &self,
        cursor: u64,
        direction: Direction,
        limit: usize,
        max_scan: usize,
        keep: &dyn Fn(&str) -> bool,
    ) -> io::Result<AllPage> {
        let mut page = AllPage { next: cursor, ..AllPage::default() };
        let mut positions = Vec::new();
        {
            let index = self.shared.index.read();
            let len = index.len();
            let mut seq = cursor.min(len);
            while page.scanned < max_scan && positions.len() < limit {
                let this = match direction {
                    Direction::Forwards if seq < len => seq,
                    Direction::Backwards if seq > 0 => seq - 1,
                    _ => break,
                };
                page.scanned += 1;
                let position = index.position_at(this).unwrap_or_default();
                page.last_scanned = Some(position);
                if index.stream_name_at(this).is_some_and(keep) {
                    positions.push(position);
                }
                seq = match direction {
                    Direction::Forwards => this + 1,
                    Direction::Backwards => this,
                };
            }
            page.next = seq;
        }
        let mut reader = EventReader::new(&self.shared.file, 256 * 1024);
        page.events = positions
            .into_iter()
            .map(|position| Ok(ReadEvent { position, event: reader.read(position)? }))
            .collect::<io::Result<_>>()?;
        Ok(page)
    }

    /// The number of durable events in `$all`.
    pub fn head(&self) -> u64 {
        *self.shared.head.borrow()
    }

    /// The position one past the last durable record, i.e. `$all`'s end.
    pub fn last_position(&self) -> Option<u64> {
        let index = self.shared.index.read();
        index.len().checked_sub(1).and_then(|seq| index.position_at(seq))
    }

    /// A receiver that changes whenever new events become durable.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    /// Stops the writer after the writes already queued, waits for it, and
    /// releases the log's lock so another server may open the directory.
    /// Later writes fail with `UNAVAILABLE`. Blocks: call it from a blocking context.
    pub fn close(&self) {
        if let Some(handle) = self.writer.lock().take() {
            if self.commands.try_send(Command::Shutdown).is_err() {
                let _ = self.commands.blocking_send(Command::Shutdown);
            }
            let _ = handle.join();
            if let Err(e) = self.shared.file.unlock() {
                tracing::warn!(error = %e, "cannot unlock the event log");
            }
        }
    }
}

fn check_stream_name(stream: &str) -> Result<(), WriteError> {
    if stream.is_empty() {
        return Err(WriteError::Invalid("stream name must not be empty".into()));
    }
    Ok(())
}
