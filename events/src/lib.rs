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

impl UserRegistered {
    /// The schema version this code writes.
    pub const SCHEMA_VERSION: u32 = 2;
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
}
