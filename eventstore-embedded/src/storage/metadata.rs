//! The keys of a stream's metadata document that reads enforce: `$tb`,
//! `$maxCount` and `$maxAge`.
//!
//! As in EventStoreDB, the latest `$metadata` event in `$$<stream>` is the
//! whole truth: a key it leaves out is unset, even if an earlier document set
//! it, and a document that is not a JSON object sets nothing. A key whose
//! value is not what EventStoreDB accepts (a positive integer for `$maxCount`
//! and `$maxAge`, a non-negative one for `$tb`) is ignored. Access lists,
//! `$cacheControl` and custom keys are not read here: they are the client's.

use std::num::NonZeroU64;

/// .NET ticks (100 ns, the unit of `created`) in a second.
const TICKS_PER_SECOND: i64 = 10_000_000;

/// What one metadata document says about which events reads may return.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    /// `$tb`: revisions below this are hidden. Soft delete sets it to the
    /// stream's next revision.
    pub(crate) truncate_before: u64,
    /// `$maxCount`: only this many of the latest events are readable.
    pub(crate) max_count: Option<NonZeroU64>,
    /// `$maxAge`, in seconds: events created longer ago than this are not readable.
    pub(crate) max_age: Option<NonZeroU64>,
}

impl StreamLimits {
    /// Reads the limits from a stream-metadata document.
    pub(crate) fn parse(data: &[u8]) -> Self {
        let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice(data) else {
            return StreamLimits::default();
        };
        let positive = |key: &str| doc.get(key).and_then(serde_json::Value::as_u64).and_then(NonZeroU64::new);
        StreamLimits {
            truncate_before: doc.get("$tb").and_then(serde_json::Value::as_u64).unwrap_or(0),
            max_count: positive("$maxCount"),
            max_age: positive("$maxAge"),
        }
    }

    /// Whether the document limits nothing.
    pub(crate) fn is_unset(&self) -> bool {
        *self == StreamLimits::default()
    }
}

/// The oldest `created` (ticks since the Unix epoch) that `$maxAge` seconds
/// still let a read at `now` return. An event created exactly `$maxAge` ago
/// is still readable, as in EventStoreDB.
pub(crate) fn oldest_readable(now: i64, max_age: NonZeroU64) -> i64 {
    let age = i64::try_from(max_age.get()).unwrap_or(i64::MAX).saturating_mul(TICKS_PER_SECOND);
    now.saturating_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(json: &str) -> StreamLimits {
        StreamLimits::parse(json.as_bytes())
    }

    #[test]
    fn reads_the_three_keys_and_ignores_the_rest() {
        let parsed = limits(r#"{"$tb":3,"$maxCount":10,"$maxAge":60,"$acl":{},"custom":1}"#);
        assert_eq!(
            parsed,
            StreamLimits { truncate_before: 3, max_count: NonZeroU64::new(10), max_age: NonZeroU64::new(60) }
        );
        assert!(limits(r#"{"custom":1}"#).is_unset());
    }

    #[test]
    fn values_eventstoredb_refuses_and_documents_that_are_not_objects_limit_nothing() {
        for json in [
            r#"{"$maxCount":0,"$maxAge":0}"#,
            r#"{"$maxCount":-1,"$maxAge":1.5,"$tb":-2}"#,
            r#"{"$maxCount":"3","$maxAge":null,"$tb":"1"}"#,
            "[1,2]",
            "not json",
            "",
        ] {
            assert!(limits(json).is_unset(), "{json}");
        }
        assert_eq!(limits(r#"{"$maxCount":0,"$tb":2}"#).truncate_before, 2, "one bad key leaves the others");
    }

    #[test]
    fn an_event_exactly_max_age_old_is_still_readable() {
        let minute = NonZeroU64::new(60).expect("non-zero");
        assert_eq!(oldest_readable(1_000 * TICKS_PER_SECOND, minute), 940 * TICKS_PER_SECOND);
        assert_eq!(oldest_readable(i64::MIN + 1, minute), i64::MIN, "saturates");
        assert_eq!(oldest_readable(0, NonZeroU64::MAX), -i64::MAX, "an age beyond i64 ticks keeps everything");
    }
}
