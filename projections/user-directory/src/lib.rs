//! `user-directory`: one document per registered user and an email lookup.
//!
//! Collections:
//! - `users`, keyed by user id: `{ id, email, username, registeredAt }`. The
//!   password hash is never copied. Version 1 events carry no `registeredAt`;
//!   the event's stored time stands in for it.
//! - `emails`, keyed by the lower-cased email: `{ userId }`.
#![deny(missing_docs)]

use projector_events::UserRegistered;
use projector_guest_sdk::{Description, Event, Projection, ReadModel, Result};
use serde::{Deserialize, Serialize};

/// The projection.
#[derive(Debug)]
pub struct UserDirectory;

/// A user as the directory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The user id.
    pub id: String,
    /// The email as registered.
    pub email: String,
    /// The username.
    pub username: String,
    /// When the user registered (RFC 3339).
    pub registered_at: String,
}

/// The email lookup entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailEntry {
    /// The user holding the email.
    pub user_id: String,
}

impl Projection for UserDirectory {
    fn description() -> Description {
        Description::new("user-directory", "1.0.0")
            .event_types([<UserRegistered as projector_guest_sdk::EventSchema>::TYPE])
            .streams(["user-"])
            .index("users", "email")
            .index("users", "username")
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        let Some(registered) = event.decode::<UserRegistered>()? else { return Ok(()) };
        let user = User {
            registered_at: registered.registered_at.unwrap_or_else(|| event.created_rfc3339()),
            id: registered.user_id,
            email: registered.email,
            username: registered.username,
        };
        model.put("emails", &user.email.to_lowercase(), &EmailEntry { user_id: user.id.clone() })?;
        model.put("users", &user.id, &user)
    }
}

projector_guest_sdk::export_projection!(UserDirectory);

#[cfg(test)]
mod tests {
    use super::*;
    use projector_guest_sdk::testing::{Harness, TestEvent};
    use projector_guest_sdk::Error;
    use serde_json::json;

    fn v2(id: &str, email: &str) -> TestEvent {
        TestEvent::json(
            "UserRegistered",
            &json!({"userId": id, "email": email, "username": format!("name-{id}"),
                    "passwordHash": "$argon2id$v=19$secret", "registeredAt": "2026-11-23T10:00:00Z"}),
        )
        .stream(&format!("user-{id}"))
        .schema_version(2)
    }

    #[test]
    fn a_registration_makes_a_user_document_and_an_email_entry_without_the_hash() {
        let mut harness = Harness::<UserDirectory>::new();
        harness.given([v2("u1", "Ada@Example.com")]).expect("applies");
        assert_eq!(
            harness.document("users", "u1"),
            Some(
                &json!({"id": "u1", "email": "Ada@Example.com", "username": "name-u1", "registeredAt": "2026-11-23T10:00:00Z"})
            )
        );
        assert_eq!(harness.document("emails", "ada@example.com"), Some(&json!({"userId": "u1"})));
        let everything = serde_json::to_string(&harness.collection("users")).expect("json");
        assert!(!everything.contains("argon2"), "the password hash must never reach the read model");
    }

    #[test]
    fn version_one_events_are_upcast_and_use_the_stored_time() {
        let mut harness = Harness::<UserDirectory>::new();
        let v1 = TestEvent::json(
            "UserRegistered",
            &json!({"userId": "u0", "email": "old@example.com", "username": "oldtimer", "passwordHash": "$argon2id$x"}),
        )
        .stream("user-u0")
        .created_ms(1_795_435_200_000);
        harness.given([v1]).expect("applies");
        assert_eq!(
            harness.document("users", "u0").and_then(|u| u.get("registeredAt")),
            Some(&json!("2026-11-23T12:00:00.000Z"))
        );
    }

    #[test]
    fn events_it_did_not_ask_for_never_reach_it() {
        let mut harness = Harness::<UserDirectory>::new();
        let elsewhere = v2("u2", "x@example.com").stream("audit-1").expect_ignored();
        let other_type = TestEvent::json("UserRenamed", &json!({})).stream("user-u3").expect_ignored();
        harness.given([elsewhere, other_type]).expect("nothing to do");
        assert!(harness.collections().is_empty());
    }

    #[test]
    fn a_malformed_registration_fails_the_whole_batch() {
        let mut harness = Harness::<UserDirectory>::new();
        let broken = TestEvent::raw("UserRegistered", "{not json").stream("user-u9").schema_version(2);
        let err = harness.given([v2("u1", "a@example.com"), broken]).expect_err("fails");
        assert_eq!(err.event_index, 1);
        assert!(matches!(err.error, Error::InvalidEvent(_)), "{:?}", err.error);
        assert!(harness.collections().is_empty(), "the batch's earlier write is discarded too");
    }
}
