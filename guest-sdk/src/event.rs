//! Events as a projection sees them, and typed, versioned decoding.

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// One event delivered to a projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The stream the event belongs to, e.g. `user-42`.
    pub stream_id: String,
    /// The event type, e.g. `UserRegistered`.
    pub event_type: String,
    /// The event id (UUID text).
    pub event_id: String,
    /// The event's number in its stream.
    pub stream_revision: u64,
    /// The event's position in `$all`.
    pub commit_position: u64,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The content type, e.g. `application/json`.
    pub content_type: String,
    /// The payload.
    pub data: Vec<u8>,
    /// The metadata (JSON by convention; may be empty).
    pub metadata: Vec<u8>,
}

/// A typed event with a schema history.
///
/// `TYPE` is the event type it is stored under. `from_version` builds the
/// current shape from a payload of any schema version: that is where
/// upcasting lives (e.g. filling a field that version 1 lacked).
pub trait EventSchema: Sized {
    /// The stored event type.
    const TYPE: &'static str;

    /// Decodes a payload written under schema `version`.
    fn from_version(version: u32, data: &[u8]) -> Result<Self>;
}

impl Event {
    /// The payload parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.data).map_err(|e| {
            Error::invalid_event(format!("{} {}@{}: {e}", self.event_type, self.stream_id, self.stream_revision))
        })
    }

    /// The metadata parsed as JSON into `T`.
    pub fn metadata_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.metadata).map_err(|e| Error::invalid_event(format!("metadata: {e}")))
    }

    /// The schema version in the metadata (`schemaVersion`), 1 when absent.
    pub fn schema_version(&self) -> Result<u32> {
        if self.metadata.is_empty() {
            return Ok(1);
        }
        let metadata: serde_json::Value = self.metadata_json()?;
        match metadata.get("schemaVersion") {
            None => Ok(1),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| Error::invalid_event(format!("schemaVersion {v} is not a version number"))),
        }
    }

    /// The stored time as an RFC 3339 UTC timestamp with milliseconds,
    /// e.g. `2026-11-23T12:00:00.000Z`.
    pub fn created_rfc3339(&self) -> String {
        rfc3339_from_ms(self.created_ms)
    }

    /// The stored day (UTC) as `YYYY-MM-DD`.
    pub fn created_date(&self) -> String {
        split_ms(self.created_ms).0
    }

    /// The event as `E` if its type is `E::TYPE`, upcast from its schema
    /// version; `None` if it is another type.
    pub fn decode<E: EventSchema>(&self) -> Result<Option<E>> {
        if self.event_type != E::TYPE {
            return Ok(None);
        }
        E::from_version(self.schema_version()?, &self.data).map(Some)
    }
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC timestamp with
/// milliseconds, e.g. `2026-11-23T12:00:00.000Z`.
pub fn rfc3339_from_ms(ms: i64) -> String {
    let (date, ms_of_day) = split_ms(ms);
    let (h, m, s, ms) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{date}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// Splits milliseconds since the epoch into a `YYYY-MM-DD` date and the
/// milliseconds into that day (proleptic Gregorian calendar, UTC).
fn split_ms(ms: i64) -> (String, i64) {
    let days = ms.div_euclid(86_400_000);
    let ms_of_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), ms_of_day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(created_ms: i64) -> Event {
        Event {
            stream_id: String::new(),
            event_type: String::new(),
            event_id: String::new(),
            stream_revision: 0,
            commit_position: 0,
            created_ms,
            content_type: String::new(),
            data: Vec::new(),
            metadata: Vec::new(),
        }
    }

    #[test]
    fn formats_stored_times_in_utc() {
        assert_eq!(at(0).created_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_795_435_200_123).created_rfc3339(), "2026-11-23T12:00:00.123Z");
        assert_eq!(at(951_782_400_000).created_date(), "2000-02-29");
        assert_eq!(at(-1).created_rfc3339(), "1969-12-31T23:59:59.999Z");
    }
}
