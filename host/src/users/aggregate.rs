//! The user aggregate: what a user's stream says about them, and the one
//! decision it makes, whether a registration may happen.
//!
//! It is pure: loading the stream and appending the event belong to the
//! caller, which appends with expected revision `no_stream`, so the store
//! enforces the decision even against a concurrent writer.

use eventstore::RecordedEvent;
use projector_events::{RegistrationAbandoned, UserRegistered};

use super::command::RegisterUser;
use super::store::{decode, note, StoreError};

/// The metadata field of `UserRegistered` holding the keyed digest of the
/// request that registered it (absent for registrations without an
/// idempotency key, and for those appended before the digest existed).
pub(crate) const REQUEST_DIGEST: &str = "requestDigest";

/// A user as their stream `user-{id}` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum User {
    /// No stream yet: the id is free.
    New,
    /// Registered by the stream's first event, at commit `position`, by
    /// the request whose digest is `digest` (when it was recorded).
    Registered { event: UserRegistered, position: u64, digest: Option<String> },
    /// Fenced: the stream begins with `RegistrationAbandoned`, so this id
    /// can never register.
    Abandoned,
}

/// Why the aggregate refused a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The id is registered already (by this `event`, at `position`, by the
    /// request whose digest is `digest`).
    AlreadyRegistered { event: Box<UserRegistered>, position: u64, digest: Option<String> },
    /// The id was fenced.
    Abandoned,
}

impl User {
    /// The user from the first event of their stream (`None`: no stream).
    pub(crate) fn from_first(first: Option<&RecordedEvent>) -> Result<User, StoreError> {
        let Some(event) = first else { return Ok(User::New) };
        if let Some(registered) = decode::<UserRegistered>(event)? {
            let digest = note(event, REQUEST_DIGEST);
            return Ok(User::Registered { event: registered, position: event.position.commit, digest });
        }
        if decode::<RegistrationAbandoned>(event)?.is_some() {
            return Ok(User::Abandoned);
        }
        Err(StoreError::Failed(anyhow::anyhow!(
            "'{}' begins with a '{}' event, not a registration",
            event.stream_id,
            event.event_type
        )))
    }

    /// Decides `command` for user `id`: the event to append, or why not.
    pub(crate) fn register(
        &self,
        id: &str,
        command: &RegisterUser,
        password_hash: String,
        registered_at: String,
    ) -> Result<UserRegistered, Refusal> {
        match self {
            User::New => Ok(UserRegistered {
                user_id: id.to_owned(),
                email: command.email.clone(),
                username: command.username.clone(),
                password_hash,
                registered_at: Some(registered_at),
            }),
            User::Registered { event, position, digest } => Err(Refusal::AlreadyRegistered {
                event: Box::new(event.clone()),
                position: *position,
                digest: digest.clone(),
            }),
            User::Abandoned => Err(Refusal::Abandoned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command() -> RegisterUser {
        RegisterUser::from_json(
            json!({"email": "ada@example.com", "username": "ada", "password": "correct horse"})
                .as_object()
                .expect("object")
                .clone(),
        )
        .expect("valid")
    }

    #[test]
    fn only_a_new_user_registers() {
        let event = User::New
            .register("id-1", &command(), "$argon2id$h".into(), "2026-11-23T12:00:00.000Z".into())
            .expect("registers");
        assert_eq!(event.email, "ada@example.com");
        assert_eq!(event.registered_at.as_deref(), Some("2026-11-23T12:00:00.000Z"));

        let registered = User::Registered { event: event.clone(), position: 7, digest: Some("d1".into()) };
        assert_eq!(
            registered.register("id-1", &command(), "$argon2id$other".into(), "later".into()),
            Err(Refusal::AlreadyRegistered { event: Box::new(event), position: 7, digest: Some("d1".into()) })
        );
        assert_eq!(
            User::Abandoned.register("id-1", &command(), "$argon2id$h".into(), "now".into()),
            Err(Refusal::Abandoned)
        );
    }
}
