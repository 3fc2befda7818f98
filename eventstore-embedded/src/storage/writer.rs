//! The single writer: expected-revision checks, group commit, and publishing.
//!
//! Writes are serialised through one thread, which makes optimistic
//! concurrency trivially correct: of several appends expecting the same
//! revision, the first checked wins. The thread takes every write that is
//! waiting (a group), checks each against the index plus the group's own
//! earlier writes, writes the group's records in one `write` and one
//! `fdatasync`, and only then applies them to the index and wakes readers.
//! If the write or sync fails the file is cut back and the index is left
//! untouched, so nothing unacknowledged is ever visible.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::index::{Index, StreamEntry, METADATA_TYPE, TOMBSTONE_REVISION, TOMBSTONE_TYPE};
use super::log::EventReader;
use super::metadata::StreamLimits;
use super::record::StoredEvent;
use super::{CurrentRevision, ExpectedRevision, ProposedEvent, Shared, WriteError, WriteResult};

/// Most writes taken into one group, and most bytes, before syncing.
const MAX_GROUP_WRITES: usize = 2048;
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

pub(super) enum Command {
    Write(Write, oneshot::Sender<Result<WriteResult, WriteError>>),
    Shutdown,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Write(..) => "Write",
            Command::Shutdown => "Shutdown",
        })
    }
}

pub(super) enum Write {
    Append { stream: String, expected: ExpectedRevision, events: Vec<ProposedEvent> },
    Delete { stream: String, expected: ExpectedRevision },
    Tombstone { stream: String, expected: ExpectedRevision },
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    end: u64,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("eventstore-writer".into())
        .spawn(move || Writer { shared, end, buf: Vec::new() }.run(commands))
}

struct Writer {
    shared: Arc<Shared>,
    /// Where the next record goes.
    end: u64,
    buf: Vec<u8>,
}

type Reply = oneshot::Sender<Result<WriteResult, WriteError>>;

impl Writer {
    fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut group: Vec<(Write, Reply)> = Vec::new();
        let mut stopping = false;
        while !stopping {
            match commands.blocking_recv() {
                Some(Command::Write(write, reply)) => group.push((write, reply)),
                Some(Command::Shutdown) | None => break,
            }
            while group.len() < MAX_GROUP_WRITES && self.buf.len() < MAX_GROUP_BYTES {
                match commands.try_recv() {
                    Ok(Command::Write(write, reply)) => group.push((write, reply)),
                    Ok(Command::Shutdown) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(std::mem::take(&mut group));
        }
        tracing::debug!("event store writer stopped");
    }

    fn commit_group(&mut self, group: Vec<(Write, Reply)>) {
        let created = now_ticks();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut planned: Vec<(StoredEvent, u64)> = Vec::new();
        self.buf.clear();
        {
            let index = self.shared.index.read();
            let mut draft = Draft { index: &index, streams: HashMap::new(), ids: HashMap::new() };
            let mut reader = EventReader::new(&self.shared.file, 4096);
            for (write, reply) in group {
                let outcome = draft.plan(write, created, &mut reader).map(|(events, known)| {
                    let mut written = None;
                    for event in events {
                        let position = self.end + self.buf.len() as u64;
                        self.buf.reserve(event.encoded_len());
                        event.encode_into(&mut self.buf);
                        draft.note(&event, position);
                        written = Some(WriteResult {
                            current_revision: CurrentRevision::Current(event.revision),
                            position: Some(position),
                        });
                        planned.push((event, position));
                    }
                    // A plan either writes events or already knows its answer.
                    known
                        .or(written)
                        .unwrap_or(WriteResult { current_revision: CurrentRevision::NoStream, position: None })
                });
                outcomes.push((outcome, reply));
            }
        }
        if !self.buf.is_empty() {
            if let Err(e) = self.persist() {
                tracing::error!(error = %e, "cannot write the event log; failing the group");
                let message = format!("cannot write the event log: {e}");
                for (outcome, reply) in outcomes {
                    let failed = match outcome {
                        Ok(_) => Err(WriteError::Unavailable(message.clone())),
                        rejected => rejected,
                    };
                    let _ = reply.send(failed);
                }
                return;
            }
            let events = {
                let mut index = self.shared.index.write();
                for (event, position) in &planned {
                    index.apply(event, *position);
                }
                index.len()
            };
            self.end += self.buf.len() as u64;
            self.shared.head.send_replace(events);
        }
        for (outcome, reply) in outcomes {
            let _ = reply.send(outcome);
        }
    }

    /// Writes the buffer at the end of the log and syncs it; on failure cuts
    /// the file back so a partial write can never be recovered as data.
    fn persist(&mut self) -> io::Result<()> {
        let file = &self.shared.file;
        let result = file.write_all_at(&self.buf, self.end).and_then(|()| file.sync_data());
        if result.is_err() {
            if let Err(e) = file.set_len(self.end).and_then(|()| file.sync_data()) {
                tracing::error!(error = %e, "cannot cut back a failed write; recovery at restart will");
            }
        }
        result
    }
}

/// The index as it will be once the group's earlier writes are applied.
struct Draft<'a> {
    index: &'a Index,
    streams: HashMap<String, DraftStream>,
    ids: HashMap<Uuid, (String, u64, u64)>,
}

#[derive(Clone, Copy)]
struct DraftStream {
    len: u64,
    truncate_before: u64,
    tombstoned: bool,
    last_position: Option<u64>,
}

impl DraftStream {
    fn of(entry: Option<&StreamEntry>) -> Self {
        match entry {
            None => DraftStream { len: 0, truncate_before: 0, tombstoned: false, last_position: None },
            Some(e) => DraftStream {
                len: e.positions.len() as u64,
                truncate_before: e.limits.truncate_before,
                tombstoned: e.tombstone.is_some(),
                last_position: e.positions.last().copied(),
            },
        }
    }

    fn current(&self) -> CurrentRevision {
        match self.len {
            0 => CurrentRevision::NoStream,
            n => CurrentRevision::Current(n - 1),
        }
    }

    fn visible(&self) -> bool {
        self.len > self.truncate_before
    }

    fn check(&self, expected: ExpectedRevision) -> Result<(), WriteError> {
        let ok = match expected {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => !self.visible(),
            ExpectedRevision::StreamExists => self.visible(),
            ExpectedRevision::Exact(n) => self.len == n + 1,
        };
        if ok {
            Ok(())
        } else {
            Err(WriteError::WrongExpectedVersion { current: self.current(), expected })
        }
    }
}

type Planned = (Vec<StoredEvent>, Option<WriteResult>);

impl Draft<'_> {
    fn stream(&self, name: &str) -> DraftStream {
        self.streams.get(name).copied().unwrap_or_else(|| DraftStream::of(self.index.stream(name)))
    }

    fn current(&self, name: &str) -> CurrentRevision {
        self.stream(name).current()
    }
    /// Decides what a write puts in the log. `Some(result)` in the plan means
    /// the answer is already known (an idempotent retry, or an empty append).
    fn plan(&self, write: Write, created: i64, reader: &mut EventReader<'_>) -> Result<Planned, WriteError> {
        match write {
            Write::Append { stream, expected, events } => {
                let state = self.stream(&stream);
                if state.tombstoned {
                    return Err(WriteError::StreamDeleted(stream));
                }
                if let Some(result) = self.idempotent_result(&stream, expected, &events)? {
                    return Ok((Vec::new(), Some(result)));
                }
                state.check(expected)?;
                if events.is_empty() {
                    let result = WriteResult { current_revision: state.current(), position: state.last_position };
                    return Ok((Vec::new(), Some(result)));
                }
                let planned = events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| StoredEvent {
                        stream: stream.clone(),
                        revision: state.len + i as u64,
                        id: e.id,
                        event_type: e.event_type,
                        content_type: e.content_type,
                        created,
                        metadata: e.metadata,
                        data: e.data,
                    })
                    .collect();
                Ok((planned, None))
            }
            Write::Delete { stream, expected } => {
                let state = self.stream(&stream);
                if state.tombstoned {
                    return Err(WriteError::StreamDeleted(stream));
                }
                state.check(expected)?;
                let meta_stream = format!("$${stream}");
                let data = self.metadata_with_truncate_before(&meta_stream, state.len, reader);
                let event = StoredEvent {
                    revision: self.stream(&meta_stream).len,
                    stream: meta_stream,
                    id: Uuid::new_v4(),
                    event_type: METADATA_TYPE.into(),
                    content_type: "application/json".into(),
                    created,
                    metadata: Bytes::new(),
                    data,
                };
                Ok((vec![event], None))
            }
            Write::Tombstone { stream, expected } => {
                let state = self.stream(&stream);
                if state.tombstoned {
                    return Err(WriteError::StreamDeleted(stream));
                }
                state.check(expected)?;
                let event = StoredEvent {
                    stream,
                    revision: TOMBSTONE_REVISION,
                    id: Uuid::new_v4(),
                    event_type: TOMBSTONE_TYPE.into(),
                    content_type: "application/octet-stream".into(),
                    created,
                    metadata: Bytes::new(),
                    data: Bytes::new(),
                };
                Ok((vec![event], None))
            }
        }
    }

    /// If these exact events (by id, in order) are already in the stream where
    /// the expected revision says they would go, the append is a retry.
    fn idempotent_result(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: &[ProposedEvent],
    ) -> Result<Option<WriteResult>, WriteError> {
        let Some(first) = events.first() else { return Ok(None) };
        let Some((found_stream, first_revision, _)) = self.find(&first.id) else { return Ok(None) };
        if found_stream != stream {
            return Ok(None);
        }
        let expected_here = match expected {
            ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
            ExpectedRevision::NoStream => first_revision == 0,
            ExpectedRevision::Exact(n) => first_revision == n + 1,
        };
        if !expected_here {
            return Ok(None);
        }
        let mut last_position = None;
        for (i, event) in events.iter().enumerate() {
            match self.find(&event.id) {
                Some((s, revision, position)) if s == stream && revision == first_revision + i as u64 => {
                    last_position = Some(position)
                }
                _ => {
                    // Part of the batch was written before, part was not: the
                    // retry does not match what is there.
                    return Err(WriteError::WrongExpectedVersion { current: self.current(stream), expected });
                }
            }
        }
        let last_revision = first_revision + events.len() as u64 - 1;
        Ok(Some(WriteResult { current_revision: CurrentRevision::Current(last_revision), position: last_position }))
    }

    fn find(&self, id: &Uuid) -> Option<(String, u64, u64)> {
        if let Some(found) = self.ids.get(id) {
            return Some(found.clone());
        }
        let (stream, revision) = self.index.find_event(id)?;
        let position = self.index.stream(stream)?.positions.get(revision as usize).copied()?;
        Some((stream.to_owned(), revision, position))
    }

    /// The stream's current metadata document with `$tb` set, keeping its other keys.
    fn metadata_with_truncate_before(&self, meta_stream: &str, tb: u64, reader: &mut EventReader<'_>) -> Bytes {
        let mut doc = self
            .streams
            .get(meta_stream)
            .map(|_| None)
            .unwrap_or_else(|| self.index.stream(meta_stream).and_then(|s| s.positions.last().copied()))
            .and_then(|position| reader.read(position).ok())
            .and_then(|event| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&event.data).ok())
            .unwrap_or_default();
        doc.insert("$tb".into(), tb.into());
        Bytes::from(serde_json::Value::Object(doc).to_string())
    }

    /// Records a planned event so later writes in the group see it.
    fn note(&mut self, event: &StoredEvent, position: u64) {
        let mut state = self.stream(&event.stream);
        if event.event_type == TOMBSTONE_TYPE && event.revision == TOMBSTONE_REVISION {
            state.tombstoned = true;
        } else {
            self.ids.insert(event.id, (event.stream.clone(), state.len, position));
            state.len += 1;
            state.last_position = Some(position);
        }
        match self.streams.get_mut(&event.stream) {
            Some(slot) => *slot = state,
            None => {
                self.streams.insert(event.stream.clone(), state);
            }
        }
        if event.event_type == METADATA_TYPE {
            if let Some(target) = event.stream.strip_prefix("$$") {
                // As the index will: the latest document replaces the previous one whole.
                let mut target_state = self.stream(target);
                target_state.truncate_before = StreamLimits::parse(&event.data).truncate_before;
                self.streams.insert(target.to_owned(), target_state);
            }
        }
    }
}

/// Now, in .NET ticks (100 ns) since the Unix epoch, as EventStoreDB reports `created`.
pub(super) fn now_ticks() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_nanos() / 100) as i64
}
