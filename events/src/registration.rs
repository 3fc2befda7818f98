//! The events the command side uses to keep emails and usernames unique
//! (docs/adr/0006-unique-emails-and-usernames.md), and the stream names of
//! the registration.
//!
//! A unique value has a reservation stream, `unique-{kind}-{normalised value}`,
//! whose last event says which user holds it. A user stream, `user-{id}`,
//! begins with either `UserRegistered` (the user exists) or
//! `RegistrationAbandoned` (that id can never register). Projections read
//! neither kind of stream's bookkeeping events; they are here so that every
//! stored event type is defined in one place.

use projector_guest_sdk::{Error, EventSchema, Result};
use serde::{Deserialize, Serialize};

use crate::{parse, Current, UserRegistered};

/// The stream of user `id`.
pub fn user_stream(id: &str) -> String {
    format!("user-{id}")
}

/// A value that at most one user may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UniqueValue {
    /// The email, compared case-insensitively.
    Email,
    /// The username, compared case-insensitively.
    Username,
}

impl UniqueValue {
    /// The field of the registration this value comes from.
    pub fn field(self) -> &'static str {
        match self {
            UniqueValue::Email => "email",
            UniqueValue::Username => "username",
        }
    }

    /// `raw` as compared for uniqueness: lower-cased (both fields are ASCII
    /// once validated, so this is all the folding needed).
    pub fn normalise(self, raw: &str) -> String {
        raw.trim().to_ascii_lowercase()
    }

    /// This value of a registered user, normalised.
    pub fn of(self, user: &UserRegistered) -> String {
        match self {
            UniqueValue::Email => self.normalise(&user.email),
            UniqueValue::Username => self.normalise(&user.username),
        }
    }

    /// The reservation stream of `normalised`, e.g. `unique-email-ada@example.com`.
    pub fn stream(self, normalised: &str) -> String {
        format!("unique-{}-{normalised}", self.field())
    }
}

/// A request holds a unique value for user `user_id` while it registers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueReserved {
    /// What kind of value.
    pub kind: UniqueValue,
    /// The normalised value (lower-cased).
    pub value: String,
    /// The user the value is reserved for.
    pub user_id: String,
    /// When the reservation was taken, in milliseconds since the Unix epoch
    /// (by the host's clock); after the lease a reservation whose user never
    /// registered may be taken over.
    pub reserved_at_ms: i64,
}

/// The holder gave the value up without registering (another of its values
/// was taken). Whoever takes the value over still fences the holder first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservationReleased {
    /// The user who held the value.
    pub user_id: String,
}

/// Written as the first event of `user-{id}` by a request taking over a
/// value that user `id` held without registering: the stream now exists, so
/// that user's `UserRegistered` (appended with expected revision `no_stream`)
/// can never land.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationAbandoned {
    /// The user whose registration can no longer complete.
    pub user_id: String,
    /// Why, for people reading the stream.
    pub reason: String,
}

macro_rules! version_one {
    ($name:ident) => {
        impl EventSchema for $name {
            const TYPE: &'static str = stringify!($name);

            fn from_version(version: u32, data: &[u8]) -> Result<Self> {
                match version {
                    1 => parse(data),
                    other => Err(Error::invalid_event(format!("{} schema version {other} is unknown", Self::TYPE))),
                }
            }
        }

        impl Current for $name {
            const VERSION: u32 = 1;
        }
    };
}

version_one!(ValueReserved);
version_one!(ReservationReleased);
version_one!(RegistrationAbandoned);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_streams_are_named_by_kind_and_normalised_value() {
        assert_eq!(UniqueValue::Email.stream("ada@example.com"), "unique-email-ada@example.com");
        assert_eq!(UniqueValue::Username.stream("ada"), "unique-username-ada");
        assert_eq!(user_stream("42"), "user-42");
    }

    #[test]
    fn reservations_round_trip_through_their_encoding() {
        let reserved = ValueReserved {
            kind: UniqueValue::Username,
            value: "ada".into(),
            user_id: "u1".into(),
            reserved_at_ms: 1_795_435_200_000,
        };
        let encoded = crate::encode(&reserved).expect("encodes");
        assert_eq!(encoded.event_type, "ValueReserved");
        assert_eq!(ValueReserved::from_version(1, &encoded.data).expect("reads"), reserved);
    }
}
