//! Registrations appended straight to the event store, as the
//! `user-directory` and `signup-stats` projections read them (schema
//! version 2, with a password hash the read models must never show).
//!
//! These bypass `POST /users` on purpose: they are history for the
//! projections, not registrations through the API (that is `users`' test).

use eventstore::EventData;
use serde_json::json;

use super::HostEnv;

/// Appends the registration of user `u<n>` with `email`; returns its commit position.
pub(crate) async fn register(env: &HostEnv, n: u32, email: &str) -> u64 {
    let written = env
        .events
        .append_to_stream(format!("user-u{n}"), &Default::default(), registration(n, email))
        .await
        .expect("append");
    written.position.commit
}

fn registration(n: u32, email: &str) -> EventData {
    EventData::json(
        "UserRegistered",
        &json!({"userId": format!("u{n}"), "email": email, "username": format!("user{n}"),
                "passwordHash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", "registeredAt": "2026-11-23T09:00:00Z"}),
    )
    .expect("event")
    .metadata_as_json(&json!({"schemaVersion": 2}))
    .expect("metadata")
}
