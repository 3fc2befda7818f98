//! The on-disk shape of one event: encoding, checksum and decoding.
//!
//! A record is `len: u32 | crc32(body): u32 | body`, little-endian, where the
//! body holds every field of the event. The checksum lets recovery tell a
//! complete record from a torn or corrupt one. This module knows nothing about
//! files or streams; it only turns events into bytes and back.

use bytes::Bytes;
use uuid::Uuid;

/// Bytes before the body: its length and its checksum.
pub(crate) const HEADER_LEN: usize = 8;

/// Upper bound on one record's body; anything larger is corruption.
pub(crate) const MAX_BODY_LEN: usize = 64 * 1024 * 1024;

const KIND_EVENT: u8 = 1;

/// An event as stored: everything the client sees except the position, which
/// is where the record starts in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The stream the event belongs to.
    pub stream: String,
    /// The event's number within its stream.
    pub revision: u64,
    /// The id the client gave the event; appends are idempotent by it.
    pub id: Uuid,
    /// The event type, e.g. `UserRegistered`.
    pub event_type: String,
    /// The content type, e.g. `application/json`.
    pub content_type: String,
    /// When the server accepted the event, in .NET ticks (100 ns) since the Unix epoch.
    pub created: i64,
    /// The client's own metadata bytes.
    pub metadata: Bytes,
    /// The event payload.
    pub data: Bytes,
}

/// Why a byte range is not a valid record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the header announces: a torn write, or more to read.
    Incomplete { needed: usize },
    /// The bytes are all there but do not form a valid record.
    Corrupt(&'static str),
}

impl StoredEvent {
    /// The length of this event's record, header included.
    pub(crate) fn encoded_len(&self) -> usize {
        HEADER_LEN
            + 1
            + 8
            + 8
            + 16
            + 2
            + self.stream.len()
            + 2
            + self.event_type.len()
            + 2
            + self.content_type.len()
            + 4
            + self.metadata.len()
            + 4
            + self.data.len()
    }

    /// Appends the full record (header and body) to `out`.
    ///
    /// Callers validate string lengths first (see [`check_lengths`]).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        out.push(KIND_EVENT);
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
        put_short(out, self.stream.as_bytes());
        put_short(out, self.event_type.as_bytes());
        put_short(out, self.content_type.as_bytes());
        put_long(out, &self.metadata);
        put_long(out, &self.data);
        let body = &out[start + HEADER_LEN..];
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(body);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes the record at the start of `buf`, returning it and its total length.
    pub(crate) fn decode(buf: &[u8]) -> Result<(StoredEvent, usize), DecodeError> {
        Self::decode_in(buf, None)
    }

    /// Like [`StoredEvent::decode`], but when `buf` lies inside `source` the
    /// payload and metadata share `source`'s memory instead of being copied.
    pub(crate) fn decode_in(buf: &[u8], source: Option<&Bytes>) -> Result<(StoredEvent, usize), DecodeError> {
        let share = |part: &[u8]| match source {
            Some(source) => source.slice_ref(part),
            None => Bytes::copy_from_slice(part),
        };
        let body = body_of(buf)?;
        let total = HEADER_LEN + body.len();
        let mut r = Reader(body);
        if r.u8()? != KIND_EVENT {
            return Err(DecodeError::Corrupt("unknown record kind"));
        }
        let revision = r.u64()?;
        let created = r.u64()? as i64;
        let id = Uuid::from_slice(r.take(16)?).map_err(|_| DecodeError::Corrupt("bad event id"))?;
        let stream = r.short_str()?;
        let event_type = r.short_str()?;
        let content_type = r.short_str()?;
        let metadata = share(r.long()?);
        let data = share(r.long()?);
        if !r.0.is_empty() {
            return Err(DecodeError::Corrupt("trailing bytes in record"));
        }
        let event = StoredEvent { stream, revision, id, event_type, content_type, created, metadata, data };
        Ok((event, total))
    }
}

/// Checks that the string fields fit the record's 16-bit length prefixes.
pub(crate) fn check_lengths(stream: &str, event_type: &str, content_type: &str) -> Result<(), String> {
    for (what, value) in [("stream name", stream), ("event type", event_type), ("content type", content_type)] {
        if value.len() > u16::MAX as usize {
            return Err(format!("{what} is {} bytes long; the limit is {}", value.len(), u16::MAX));
        }
    }
    Ok(())
}

/// Validates the header and checksum and returns the body.
fn body_of(buf: &[u8]) -> Result<&[u8], DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete { needed: HEADER_LEN });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 || len > MAX_BODY_LEN {
        return Err(DecodeError::Corrupt("record length out of range"));
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Err(DecodeError::Incomplete { needed: HEADER_LEN + len });
    };
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::Corrupt("checksum mismatch"));
    }
    Ok(body)
}

/// The total record length announced by a header, if the header is sane.
pub(crate) fn announced_len(header: &[u8; HEADER_LEN]) -> Option<usize> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    (len != 0 && len <= MAX_BODY_LEN).then_some(HEADER_LEN + len)
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Corrupt("field runs past the end of the record"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut raw = [0; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    fn short_str(&mut self) -> Result<String, DecodeError> {
        let raw = self.take(2)?;
        let len = u16::from_le_bytes([raw[0], raw[1]]) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Corrupt("string field is not UTF-8"))
    }

    fn long(&mut self) -> Result<&'a [u8], DecodeError> {
        let raw = self.take(4)?;
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredEvent {
        StoredEvent {
            stream: "user-1".into(),
            revision: 7,
            id: Uuid::from_u128(42),
            event_type: "UserRegistered".into(),
            content_type: "application/json".into(),
            created: 638_000_000_000_000_000,
            metadata: Bytes::from_static(b"{\"v\":2}"),
            data: Bytes::from_static(b"{\"email\":\"a@b.c\"}"),
        }
    }

    #[test]
    fn round_trips_and_reports_its_length() {
        let mut buf = Vec::new();
        sample().encode_into(&mut buf);
        assert_eq!(buf.len(), sample().encoded_len());
        let (decoded, len) = StoredEvent::decode(&buf).expect("valid record");
        assert_eq!(decoded, sample());
        assert_eq!(len, buf.len());
    }

    #[test]
    fn a_torn_record_is_incomplete_and_a_flipped_bit_is_corrupt() {
        let mut buf = Vec::new();
        sample().encode_into(&mut buf);
        let torn = StoredEvent::decode(&buf[..buf.len() - 3]);
        assert_eq!(torn.err(), Some(DecodeError::Incomplete { needed: buf.len() }));
        let last = buf.len() - 1;
        buf[last] ^= 0x40;
        assert_eq!(StoredEvent::decode(&buf).err(), Some(DecodeError::Corrupt("checksum mismatch")));
    }
}
