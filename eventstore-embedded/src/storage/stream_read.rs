//! Reading one stream, leaving out what its metadata hides: revisions below
//! `$tb`, all but the last `$maxCount` events, and events older than `$maxAge`.
//!
//! `$tb` and `$maxCount` are revision bounds the index knows. `$maxAge` needs
//! each event's `created`, so it is decided after reading the record, against
//! the time of the read. Subscriptions to a stream (catch-up and persistent)
//! read through here too. `$all` is deliberately not filtered: EventStoreDB
//! only removes such events from `$all` when it scavenges, which this store
//! never does.

use std::ops::Range;

use super::log::EventReader;
use super::metadata;
use super::{writer, Direction, ReadError, ReadEvent, Store, StreamFrom, StreamPage};

/// Revisions read at a time once `$maxAge` has left events out of a page.
const SKIP_CHUNK: usize = 256;

impl Store {
    /// Reads up to `limit` readable events of a stream.
    ///
    /// A stream with no event at or past `$tb` (soft-deleted, or truncated
    /// whole) is not found. One whose events are all older than `$maxAge`
    /// exists and reads as empty, as in EventStoreDB. Forwards, events too old
    /// are skipped and the page still holds up to `limit` events; backwards,
    /// the first event too old ends the read: `created` grows with the
    /// revision (unless the wall clock was set back between two appends), so
    /// everything below it is older still.
    pub fn read_stream(
        &self,
        stream: &str,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<StreamPage, ReadError> {
        self.read_stream_at(stream, from, direction, limit, writer::now_ticks())
    }

    /// [`Store::read_stream`] as at `now` (ticks since the Unix epoch), the
    /// time `$maxAge` is measured from.
    pub(super) fn read_stream_at(
        &self,
        stream: &str,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
        now: i64,
    ) -> Result<StreamPage, ReadError> {
        let (mut revisions, last_revision, oldest) = {
            let index = self.shared.index.read();
            let entry = index.stream(stream).ok_or(ReadError::NotFound)?;
            if entry.tombstone.is_some() {
                return Err(ReadError::Deleted);
            }
            if !entry.has_visible_events() {
                return Err(ReadError::NotFound);
            }
            let len = entry.positions.len() as u64;
            let oldest = entry.limits.max_age.map(|max_age| metadata::oldest_readable(now, max_age));
            (candidates(entry.first_readable(), len, from, direction), len - 1, oldest)
        };
        let mut reader = EventReader::new(&self.shared.file, 4096);
        let mut events = Vec::new();
        let mut at_least = 0;
        'read: while events.len() < limit {
            let want = (limit - events.len()).max(at_least);
            let chunk: Vec<u64> = match direction {
                Direction::Forwards => revisions.by_ref().take(want).collect(),
                Direction::Backwards => revisions.by_ref().rev().take(want).collect(),
            };
            if chunk.is_empty() {
                break;
            }
            for position in self.positions_of(stream, &chunk) {
                let event = reader.read(position)?;
                if oldest.is_some_and(|oldest| event.created < oldest) {
                    match direction {
                        Direction::Forwards => continue,
                        Direction::Backwards => break 'read,
                    }
                }
                events.push(ReadEvent { position, event });
                if events.len() == limit {
                    break 'read;
                }
            }
            at_least = SKIP_CHUNK;
        }
        Ok(StreamPage { events, last_revision })
    }

    /// The log positions of these revisions of a stream. Revisions already in
    /// the stream never move, so a later lock sees the same positions.
    fn positions_of(&self, stream: &str, revisions: &[u64]) -> Vec<u64> {
        let index = self.shared.index.read();
        let Some(entry) = index.stream(stream) else { return Vec::new() };
        revisions.iter().filter_map(|&r| entry.positions.get(r as usize).copied()).collect()
    }
}

/// The revisions a read may return, before `$maxAge`, in increasing order:
/// forwards from `from`, backwards down from it, never below `first`.
fn candidates(first: u64, len: u64, from: StreamFrom, direction: Direction) -> Range<u64> {
    match direction {
        Direction::Forwards => {
            let start = match from {
                StreamFrom::Start => first,
                StreamFrom::End => len,
                StreamFrom::Revision(r) => r.max(first),
            };
            start.min(len)..len
        }
        Direction::Backwards => {
            let top = match from {
                StreamFrom::Start => first,
                StreamFrom::End => len - 1,
                StreamFrom::Revision(r) => r.min(len - 1),
            };
            first..(top + 1).max(first)
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use uuid::Uuid;

    use super::*;
    use crate::storage::{ExpectedRevision, ProposedEvent, StoreConfig};

    const SECOND: i64 = 10_000_000;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig { data_dir: dir.path().to_path_buf(), max_append_size: 1024 * 1024 };
        let store = Store::open(&config).expect("open");
        (dir, store)
    }

    fn proposed(event_type: &str, data: &str) -> ProposedEvent {
        ProposedEvent {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            content_type: "application/json".into(),
            metadata: Bytes::new(),
            data: Bytes::from(data.to_owned()),
        }
    }

    async fn append(store: &Store, stream: &str, count: usize) {
        let events = (0..count).map(|_| proposed("Counted", "{}")).collect();
        store.append(stream, ExpectedRevision::Any, events).await.expect("append");
    }

    async fn set_metadata(store: &Store, stream: &str, doc: &str) {
        let meta_stream = format!("$${stream}");
        store.append(&meta_stream, ExpectedRevision::Any, vec![proposed("$metadata", doc)]).await.expect("metadata");
    }

    /// Revisions of a page, in reading order.
    fn revisions(page: &StreamPage) -> Vec<u64> {
        page.events.iter().map(|e| e.event.revision).collect()
    }

    #[tokio::test]
    async fn max_count_leaves_the_latest_events_from_every_start_point() {
        let (_dir, store) = open();
        append(&store, "s", 10).await;
        set_metadata(&store, "s", r#"{"$maxCount":3}"#).await;
        use Direction::{Backwards, Forwards};
        use StreamFrom::{End, Revision, Start};
        let read = |from, direction, limit| revisions(&store.read_stream("s", from, direction, limit).expect("read"));
        let page = store.read_stream("s", Start, Forwards, 1).expect("read");
        assert_eq!(page.last_revision, 9, "the stream's last event, not the last readable one");
        assert_eq!(read(Start, Forwards, 100), vec![7, 8, 9]);
        assert_eq!(read(Start, Forwards, 2), vec![7, 8]);
        assert_eq!(read(Revision(2), Forwards, 100), vec![7, 8, 9]);
        assert_eq!(read(Revision(8), Forwards, 100), vec![8, 9]);
        assert_eq!(read(End, Forwards, 100), Vec::<u64>::new());
        assert_eq!(read(End, Backwards, 100), vec![9, 8, 7]);
        assert_eq!(read(Revision(8), Backwards, 1), vec![8]);
        assert_eq!(read(Revision(6), Backwards, 100), Vec::<u64>::new());

        // One more event pushes the oldest one out; a later document without
        // the key shows everything again.
        append(&store, "s", 1).await;
        assert_eq!(read(Start, Forwards, 100).first(), Some(&8));
        set_metadata(&store, "s", "{}").await;
        assert_eq!(read(Start, Forwards, 100).len(), 11);
    }

    #[tokio::test]
    async fn max_age_leaves_out_events_created_too_long_before_the_read() {
        let (_dir, store) = open();
        // Revisions 0..300 share one `created`; 300, 301 and 302 each have their own.
        append(&store, "s", 300).await;
        for _ in 0..3 {
            append(&store, "s", 1).await;
        }
        set_metadata(&store, "s", r#"{"$maxAge":60}"#).await;
        let all = store.read_stream("s", StreamFrom::Start, Direction::Forwards, 1000).expect("read");
        assert_eq!(all.events.len(), 303, "nothing is a minute old yet");
        let created = |revision: usize| all.events[revision].event.created;
        assert!(
            created(299) < created(300) && created(300) < created(301) && created(301) < created(302),
            "each append has its own time"
        );

        use Direction::{Backwards, Forwards};
        use StreamFrom::{End, Revision, Start};
        let read_at = |now, from, direction, limit| {
            let page = store.read_stream_at("s", from, direction, limit, now).expect("read");
            assert_eq!(page.last_revision, 302);
            revisions(&page)
        };
        // 301 was created exactly a minute before: still readable.
        let now = created(301) + 60 * SECOND;
        assert_eq!(read_at(now, Start, Forwards, 1), vec![301], "300 expired events skipped, one page still full");
        assert_eq!(read_at(now, Start, Forwards, 100), vec![301, 302]);
        assert_eq!(read_at(now, Revision(5), Forwards, 100), vec![301, 302]);
        assert_eq!(read_at(now, End, Backwards, 100), vec![302, 301]);
        assert_eq!(read_at(now, Revision(300), Backwards, 100), Vec::<u64>::new());
        assert_eq!(read_at(created(300) + 60 * SECOND, Revision(0), Forwards, 2), vec![300, 301]);

        // All too old: the stream exists and reads as empty, in both directions.
        let later = created(302) + 61 * SECOND;
        assert_eq!(read_at(later, Start, Forwards, 100), Vec::<u64>::new());
        assert_eq!(read_at(later, End, Backwards, 100), Vec::<u64>::new());

        // With `$maxCount` too, the stricter of the two wins.
        set_metadata(&store, "s", r#"{"$maxAge":60,"$maxCount":1}"#).await;
        assert_eq!(read_at(now, Start, Forwards, 100), vec![302]);
        set_metadata(&store, "s", r#"{"$maxAge":60,"$maxCount":200}"#).await;
        assert_eq!(read_at(now, Start, Forwards, 100), vec![301, 302]);
    }

    #[tokio::test]
    async fn a_stream_truncated_whole_by_tb_is_not_found_until_a_document_without_tb() {
        let (_dir, store) = open();
        append(&store, "s", 3).await;
        set_metadata(&store, "s", r#"{"$tb":3,"$maxCount":2}"#).await;
        let read = || store.read_stream("s", StreamFrom::Start, Direction::Forwards, 100);
        assert!(matches!(read(), Err(ReadError::NotFound)), "as a soft-deleted stream");
        set_metadata(&store, "s", r#"{"$maxCount":2}"#).await;
        assert_eq!(revisions(&read().expect("read")), vec![1, 2]);
        // The writer agrees with the index: the stream exists again.
        let exists = store.append("s", ExpectedRevision::StreamExists, vec![proposed("Counted", "{}")]).await;
        assert!(exists.is_ok(), "{exists:?}");
    }
}
