//! The event schemas of the example domain, defined once and used by both
//! the command side (which appends them) and the projections (which read
//! them), so that a schema change is one edit.
//!
//! Each type implements [`EventSchema`]: its stored type name and how to read
//! every schema version still found in the store. The schema version travels
//! in the event metadata as `schemaVersion` (absent means 1).
#![deny(missing_docs)]

use projector_guest_sdk::{Error, EventSchema, Result};
use serde::{Deserialize, Serialize};

mod registration;

pub use registration::{user_stream, RegistrationAbandoned, ReservationReleased, UniqueValue, ValueReserved};

/// An event type the command side writes: its current schema version and
/// the rules a value must meet beyond its JSON shape.
pub trait Current: EventSchema + Serialize + PartialEq {
    /// The schema version this code writes (stored as `schemaVersion` in the metadata).
    const VERSION: u32;

    /// Checks the rules the JSON shape cannot express.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// An event checked against its schema, ready to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The stored event type.
    pub event_type: &'static str,
    /// The JSON data.
    pub data: Vec<u8>,
    /// The JSON metadata, carrying `schemaVersion`.
    pub metadata: Vec<u8>,
}

/// Encodes `event` at its current schema version after checking it: its
/// rules hold, and reading the encoded bytes back as that version gives the
/// same value (so nothing is written that the readers would reject).
pub fn encode<E: Current>(event: &E) -> Result<Encoded> {
    event.validate()?;
    let data = serde_json::to_vec(event).map_err(|e| Error::invalid_event(e.to_string()))?;
    if E::from_version(E::VERSION, &data)? != *event {
        return Err(Error::invalid_event(format!("{} does not read back as written", E::TYPE)));
    }
    let metadata = serde_json::to_vec(&serde_json::json!({ "schemaVersion": E::VERSION }))
        .map_err(|e| Error::invalid_event(e.to_string()))?;
    Ok(Encoded { event_type: E::TYPE, data, metadata })
}

/// A user registered (stream `user-{userId}`).
///
/// Version 2 (current) added `registeredAt`. Version 1 events are upcast with
/// `registered_at: None`; readers that need a time use the event's stored time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserRegistered {
    /// The user's id (a UUID).
    pub user_id: String,
    /// The email as the user typed it (trimmed).
    pub email: String,
    /// The chosen username.
    pub username: String,
    /// The argon2id PHC string of the password. Never copied into read models.
    pub password_hash: String,
    /// When the registration was accepted (RFC 3339); absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<String>,
}

impl Current for UserRegistered {
    const VERSION: u32 = 2;

    fn validate(&self) -> Result<()> {
        let problem = if !is_uuid(&self.user_id) {
            "userId is not a UUID"
        } else if self.email.trim() != self.email || !self.email.contains('@') {
            "email is not a trimmed address"
        } else if self.username.is_empty() {
            "username is empty"
        } else if !self.password_hash.starts_with("$argon2id$") {
            "passwordHash is not an argon2id PHC string"
        } else if !self.registered_at.as_deref().is_some_and(is_rfc3339_utc) {
            "registeredAt is not an RFC 3339 UTC time"
        } else {
            return Ok(());
        };
        Err(Error::invalid_event(format!("UserRegistered: {problem}")))
    }
}

/// `UserRegistered` as version 1 stored it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserRegisteredV1 {
    user_id: String,
    email: String,
    username: String,
    password_hash: String,
}

impl EventSchema for UserRegistered {
    const TYPE: &'static str = "UserRegistered";

    fn from_version(version: u32, data: &[u8]) -> Result<Self> {
        match version {
            1 => {
                let v1: UserRegisteredV1 = parse(data)?;
                Ok(UserRegistered {
                    user_id: v1.user_id,
                    email: v1.email,
                    username: v1.username,
                    password_hash: v1.password_hash,
                    registered_at: None,
                })
            }
            2 => {
                let v2: UserRegistered = parse(data)?;
                if v2.registered_at.is_none() {
                    return Err(Error::invalid_event("UserRegistered v2 without registeredAt"));
                }
                Ok(v2)
            }
            other => Err(Error::invalid_event(format!("UserRegistered schema version {other} is unknown"))),
        }
    }
}

/// One line of stock movement (streams `stock-{sku}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockLine {
    /// The stock-keeping unit.
    pub sku: String,
    /// The warehouse the stock is in.
    pub warehouse: String,
    /// The quantity: received and shipped quantities are positive; an
    /// adjustment is a signed correction (a stock count found 3 fewer: -3).
    pub quantity: i64,
}

macro_rules! stock_event {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub StockLine);

        impl EventSchema for $name {
            const TYPE: &'static str = stringify!($name);

            fn from_version(version: u32, data: &[u8]) -> Result<Self> {
                match version {
                    1 => parse(data).map($name),
                    other => Err(Error::invalid_event(format!("{} schema version {other} is unknown", Self::TYPE))),
                }
            }
        }
    };
}

stock_event!(
    /// Stock arrived at a warehouse.
    StockReceived
);
stock_event!(
    /// Stock left a warehouse.
    StockShipped
);
stock_event!(
    /// A correction to a warehouse's stock (signed).
    StockAdjusted
);

fn parse<T: serde::de::DeserializeOwned>(data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::invalid_event(e.to_string()))
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let fixed = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let rest = &b[19.min(b.len())..];
    let fraction_ok = match rest {
        [b'Z'] => true,
        [b'.', middle @ .., b'Z'] => !middle.is_empty() && middle.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    fixed && fraction_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_one_is_upcast_and_version_two_requires_registered_at() {
        let v1 = json!({"userId": "u1", "email": "a@b.c", "username": "ada", "passwordHash": "$argon2id$x"});
        let upcast = UserRegistered::from_version(1, v1.to_string().as_bytes()).expect("v1");
        assert_eq!(upcast.registered_at, None);
        assert_eq!(upcast.username, "ada");
        assert!(UserRegistered::from_version(2, v1.to_string().as_bytes()).is_err());
        assert!(UserRegistered::from_version(3, v1.to_string().as_bytes()).is_err());
    }

    fn registered() -> UserRegistered {
        UserRegistered {
            user_id: "0b6f4e56-6c2a-4f0e-9d55-0a4c1f3e2b7d".into(),
            email: "Ada@Example.com".into(),
            username: "ada".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            registered_at: Some("2026-11-23T12:00:00.000Z".into()),
        }
    }

    #[test]
    fn encoding_writes_the_current_version_and_reads_back() {
        let encoded = encode(&registered()).expect("valid");
        assert_eq!(encoded.event_type, "UserRegistered");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&encoded.metadata).expect("json"),
            json!({"schemaVersion": 2})
        );
        assert_eq!(UserRegistered::from_version(2, &encoded.data).expect("reads"), registered());
    }

    #[test]
    fn encoding_refuses_values_the_schema_does_not_allow() {
        type Breakage = fn(&mut UserRegistered);
        let cases: [(&str, Breakage); 6] = [
            ("userId", |e| e.user_id = "u1".into()),
            ("email", |e| e.email = " ada@example.com".into()),
            ("username", |e| e.username.clear()),
            ("passwordHash", |e| e.password_hash = "hunter22".into()),
            ("registeredAt", |e| e.registered_at = None),
            ("registeredAt", |e| e.registered_at = Some("yesterday".into())),
        ];
        for (field, break_it) in cases {
            let mut event = registered();
            break_it(&mut event);
            let err = encode(&event).expect_err(field);
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }
}
