//! The in-memory index over the log: where each event is, never what it holds.
//!
//! Per event the index keeps its log position (twice: once in `$all` order and
//! once in its stream) and its id for idempotent retries, about 40 bytes in all
//! whatever the payload size. Event bodies stay on disk and are read on demand.
//! The index is rebuilt by scanning the log at startup; it is never persisted.

use std::collections::HashMap;

use uuid::Uuid;

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
    /// Revisions below this are hidden: the stream was soft-deleted or truncated
    /// (`$tb` in its metadata stream).
    pub(crate) truncate_before: u64,
    /// Log position of the tombstone, if the stream was hard-deleted.
    pub(crate) tombstone: Option<u64>,
}

impl StreamEntry {
    /// The revision of the last event, whether visible or not.
    pub(crate) fn last_revision(&self) -> Option<u64> {
        (self.positions.len() as u64).checked_sub(1)
    }

    /// Whether at least one event can be read.
    pub(crate) fn has_visible_events(&self) -> bool {
        (self.positions.len() as u64) > self.truncate_before
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
                if let Some(tb) = truncate_before_of(&event.data) {
                    let target_no = self.stream_no_or_insert(target);
                    self.streams[target_no as usize].truncate_before = tb;
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

/// Reads `$tb` (truncate before) from a stream-metadata document.
pub(crate) fn truncate_before_of(data: &[u8]) -> Option<u64> {
    let doc: serde_json::Value = serde_json::from_slice(data).ok()?;
    doc.get("$tb")?.as_u64()
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
        assert_eq!(a.truncate_before, 2);
        assert!(!a.has_visible_events());
        assert_eq!(index.stream("b").and_then(|b| b.tombstone), Some(400));
        assert_eq!(index.find_event(&Uuid::from_u128(3)), Some(("a", 1)));
        assert_eq!(index.len(), 5);
        assert_eq!(index.seq_before(200), 2);
        assert_eq!(index.stream_name_at(3), Some("$$a"));
    }
}
