//! The in-memory index over the log: where each event is, never what it holds.
//!
//! Per event the index keeps its log position (twice: once in `$all` order and
//! once in its stream) and its id for idempotent retries, about 40 bytes in all
//! whatever the payload size. Event bodies stay on disk and are read on demand.
//! The index is rebuilt by scanning the log at startup; it is never persisted.

use std::collections::HashMap;

use uuid::Uuid;

use super::metadata::StreamLimits;
use super::record::StoredEvent;

/// The revision ESDB gives the tombstone event of a hard-deleted stream.
pub(crate) const TOMBSTONE_REVISION: u64 = i64::MAX as u64;

/// The event type of a tombstone.
pub(crate) const TOMBSTONE_TYPE: &str = "$streamDeleted";

/// The event type of a stream-metadata event, stored in `$$<stream>`.
pub(crate) const METADATA_TYPE: &str = "$metadata";

/// One stream's events and deletion state.
#[derive(Debug, Default)]
pub(crate) struct StreamEntry {
    /// Log position of each event, indexed by revision.
    pub(crate) positions: Vec<u64>,
    /// What the latest document in its metadata stream (`$$<stream>`) hides:
    /// revisions below `$tb` (a soft delete or a truncation), all but the
    /// last `$maxCount` events, events older than `$maxAge`.
    pub(crate) limits: StreamLimits,
    /// Log position of the tombstone, if the stream was hard-deleted.
    pub(crate) tombstone: Option<u64>,
}

impl StreamEntry {
    /// The revision of the last event, whether visible or not.
    pub(crate) fn last_revision(&self) -> Option<u64> {
        (self.positions.len() as u64).checked_sub(1)
    }

    /// Whether any event is at or past `$tb`. A stream without one reads as
    /// not found; `$maxCount` always leaves the last event, and what
    /// `$maxAge` hides depends on the time of the read.
    pub(crate) fn has_visible_events(&self) -> bool {
        (self.positions.len() as u64) > self.limits.truncate_before
    }

    /// The first revision a read may return: at or past `$tb`, and among the
    /// last `$maxCount` events. (`$maxAge` is decided per event, at read time.)
    pub(crate) fn first_readable(&self) -> u64 {
        let len = self.positions.len() as u64;
        let by_count = self.limits.max_count.map_or(0, |max| len.saturating_sub(max.get()));
        self.limits.truncate_before.max(by_count)
    }
}

/// Positions of every event, by stream and in global order.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Log position of every event in `$all` order.
    all: Vec<u64>,
    /// Stream number of every event, parallel to `all`.
    all_streams: Vec<u32>,
    streams: Vec<StreamEntry>,
    names: Vec<Box<str>>,
    by_name: HashMap<Box<str>, u32>,
    /// Event id -> index into `all`, for idempotent appends.
    ids: HashMap<Uuid, u32>,
}

impl Index {
    /// Records an event that is durably in the log at `position`.
    pub(crate) fn apply(&mut self, event: &StoredEvent, position: u64) {
        let stream_no = self.stream_no_or_insert(&event.stream);
        let seq = self.all.len() as u32;
        self.all.push(position);
        self.all_streams.push(stream_no);
        self.ids.insert(event.id, seq);
        let entry = &mut self.streams[stream_no as usize];
        if event.event_type == TOMBSTONE_TYPE && event.revision == TOMBSTONE_REVISION {
            entry.tombstone = Some(position);
        } else {
            entry.positions.push(position);
        }
        if event.event_type == METADATA_TYPE {
            if let Some(target) = event.stream.strip_prefix("$$") {
                // The latest document replaces the previous one whole.
                let limits = StreamLimits::parse(&event.data);
                let target_no = if limits.is_unset() {
                    self.by_name.get(target).copied()
                } else {
                    Some(self.stream_no_or_insert(target))
                };
                if let Some(no) = target_no {
                    self.streams[no as usize].limits = limits;
                }
            }
        }
    }

    /// The stream, if any event was ever written to it.
    pub(crate) fn stream(&self, name: &str) -> Option<&StreamEntry> {
        self.by_name.get(name).map(|&no| &self.streams[no as usize])
    }

    /// The number of events in `$all`.
    pub(crate) fn len(&self) -> u64 {
        self.all.len() as u64
    }

    /// Log position of the `seq`-th event in `$all`.
    pub(crate) fn position_at(&self, seq: u64) -> Option<u64> {
        self.all.get(seq as usize).copied()
    }

    /// Stream name of the `seq`-th event in `$all`.
    pub(crate) fn stream_name_at(&self, seq: u64) -> Option<&str> {
        let no = *self.all_streams.get(seq as usize)?;
        Some(&self.names[no as usize])
    }

    /// The number of events in `$all` whose position is below `position`.
    pub(crate) fn seq_before(&self, position: u64) -> u64 {
        self.all.partition_point(|&p| p < position) as u64
    }

    /// Where an earlier append of the event with this id landed: its stream and revision.
    pub(crate) fn find_event(&self, id: &Uuid) -> Option<(&str, u64)> {
        let seq = *self.ids.get(id)? as usize;
        let position = self.all[seq];
        let stream_no = self.all_streams[seq] as usize;
        let entry = &self.streams[stream_no];
        let revision = entry.positions.binary_search(&position).ok()? as u64;
        Some((&self.names[stream_no], revision))
    }

    fn stream_no_or_insert(&mut self, name: &str) -> u32 {
        if let Some(&no) = self.by_name.get(name) {
            return no;
        }
        let no = self.streams.len() as u32;
        self.streams.push(StreamEntry::default());
        self.names.push(name.into());
        self.by_name.insert(name.into(), no);
        no
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(stream: &str, revision: u64, id: u128, event_type: &str, data: &'static [u8]) -> StoredEvent {
        StoredEvent {
            stream: stream.into(),
            revision,
            id: Uuid::from_u128(id),
            event_type: event_type.into(),
            content_type: "application/json".into(),
            created: 0,
            metadata: Bytes::new(),
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn tracks_streams_ids_and_deletion_state() {
        let mut index = Index::default();
        index.apply(&event("a", 0, 1, "A", b"{}"), 16);
        index.apply(&event("b", 0, 2, "B", b"{}"), 100);
        index.apply(&event("a", 1, 3, "A", b"{}"), 200);
        index.apply(&event("$$a", 0, 4, METADATA_TYPE, b"{\"$tb\":2}"), 300);
        index.apply(&event("b", TOMBSTONE_REVISION, 5, TOMBSTONE_TYPE, b""), 400);

        let a = index.stream("a").expect("stream a");
        assert_eq!(a.positions, vec![16, 200]);
        assert_eq!(a.limits.truncate_before, 2);
        assert!(!a.has_visible_events());
        assert_eq!(index.stream("b").and_then(|b| b.tombstone), Some(400));
        assert_eq!(index.find_event(&Uuid::from_u128(3)), Some(("a", 1)));
        assert_eq!(index.len(), 5);
        assert_eq!(index.seq_before(200), 2);
        assert_eq!(index.stream_name_at(3), Some("$$a"));
    }

    #[test]
    fn the_latest_metadata_document_sets_every_limit_and_clears_what_it_leaves_out() {
        let mut index = Index::default();
        for (n, position) in (0..5).zip((16..).step_by(100)) {
            index.apply(&event("s", n, n as u128 + 1, "A", b"{}"), position);
        }
        let first_readable = |index: &Index| index.stream("s").map(StreamEntry::first_readable);

        index.apply(&event("$$s", 0, 10, METADATA_TYPE, br#"{"$maxCount":2,"$maxAge":60}"#), 1000);
        let s = index.stream("s").expect("stream s");
        assert_eq!(s.limits.max_count.map(|n| n.get()), Some(2));
        assert_eq!(s.limits.max_age.map(|n| n.get()), Some(60));
        assert_eq!(first_readable(&index), Some(3), "the last two of five");
        assert!(index.stream("s").is_some_and(StreamEntry::has_visible_events));

        index.apply(&event("$$s", 1, 11, METADATA_TYPE, br#"{"$tb":4,"$maxCount":3}"#), 1100);
        assert_eq!(first_readable(&index), Some(4), "$tb is stricter than $maxCount");
        assert_eq!(index.stream("s").and_then(|s| s.limits.max_age), None, "left out, so cleared");

        index.apply(&event("$$s", 2, 12, METADATA_TYPE, br#"{"custom":true}"#), 1200);
        assert_eq!(index.stream("s").map(|s| s.limits), Some(StreamLimits::default()));
        assert_eq!(first_readable(&index), Some(0), "a document without $tb shows the events again");

        index.apply(&event("$$s", 3, 13, METADATA_TYPE, br#"{"$maxCount":100}"#), 1300);
        assert_eq!(first_readable(&index), Some(0), "$maxCount above the stream's length hides nothing");
        index.apply(&event("$$s", 4, 14, METADATA_TYPE, b"not json"), 1400);
        assert_eq!(
            index.stream("s").map(|s| s.limits),
            Some(StreamLimits::default()),
            "an unreadable document limits nothing"
        );

        // Metadata for a stream with no events yet is kept for when it has some;
        // a document that limits nothing does not create the stream.
        index.apply(&event("$$later", 0, 20, METADATA_TYPE, br#"{"$maxCount":1}"#), 1500);
        index.apply(&event("$$never", 0, 21, METADATA_TYPE, b"{}"), 1600);
        index.apply(&event("later", 0, 22, "A", b"{}"), 1700);
        index.apply(&event("later", 1, 23, "A", b"{}"), 1800);
        assert_eq!(index.stream("later").map(StreamEntry::first_readable), Some(1));
        assert!(index.stream("never").is_none());
    }
}
