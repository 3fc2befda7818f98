//! User registration, handled natively rather than in Wasm: validate the
//! command, hash the password, hold the email and username through
//! reservation streams, and append `UserRegistered` (schema version 2) to
//! `user-{id}` with expected revision `no_stream`.
//!
//! Reads do not come from here: `GET /users/{id}` is served from the read
//! model of the user directory projection (`http::users`), never from the
//! event stream.

mod aggregate;
mod command;
mod password;
mod store;
mod uniqueness;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventstore::ExpectedRevision;
use projector_events::{user_stream, UniqueValue};

use aggregate::{Refusal, User};
pub use command::{FieldErrors, Password, RegisterUser, EMAIL_MAX, PASSWORD_CHARS, USERNAME_CHARS};
pub use password::{Argon2Settings, Hasher};
use store::{Store, StoreError};
use uniqueness::{Claim, Held, Reservations};

/// How registrations are handled.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The cost of password hashes.
    pub argon2: Argon2Settings,
    /// How long a reservation whose user has not registered counts as a
    /// registration in progress; after it another request may take the
    /// value over (fencing the stalled one).
    pub lease: Duration,
    /// Longest one event-store operation may take before the request is
    /// answered 503.
    pub store_timeout: Duration,
    /// The projection whose read model `GET /users/{id}` reads.
    pub directory: String,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            argon2: Argon2Settings::default(),
            lease: Duration::from_secs(30),
            store_timeout: Duration::from_secs(5),
            directory: "user-directory".to_owned(),
        }
    }
}

/// An accepted registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The user id.
    pub id: String,
    /// The commit position of the `UserRegistered` event.
    pub position: u64,
    /// True when this answers a retry of an earlier request (same
    /// idempotency key and body) and nothing new was appended.
    pub replayed: bool,
}

/// Why a registration was not accepted, and how the API answers it.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// 422: the request is invalid; problems by field.
    #[error("the registration is invalid")]
    Invalid(FieldErrors),
    /// 409: values other users hold, by field.
    #[error("already taken: {0:?}")]
    Taken(FieldErrors),
    /// 422: the idempotency key was used before with another body.
    #[error("the idempotency key was used with a different request")]
    KeyReused,
    /// 409: the registration under this idempotency key stalled and was
    /// fenced; it can never complete under this key.
    #[error("the registration under this idempotency key was abandoned")]
    KeyAbandoned,
    /// 503: the event store is unreachable or too slow; the outcome of the
    /// request is unknown until it is retried (with the same idempotency key).
    #[error("{0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StoreError> for RegisterError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => RegisterError::Unavailable(message),
            StoreError::Failed(e) => RegisterError::Internal(e),
            StoreError::WrongRevision => RegisterError::Internal(anyhow::anyhow!("unexpected revision conflict")),
        }
    }
}

/// The registration command handler.
#[derive(Debug, Clone)]
pub struct Registrations {
    store: Store,
    reservations: Reservations,
    hasher: Hasher,
    directory: String,
}

impl Registrations {
    /// A handler appending through `client`.
    pub fn new(client: eventstore::Client, config: RegistrationConfig) -> anyhow::Result<Registrations> {
        let store = Store::new(client, config.store_timeout);
        Ok(Registrations {
            reservations: Reservations::new(store.clone(), config.lease),
            store,
            hasher: Hasher::new(config.argon2)?,
            directory: config.directory,
        })
    }

    /// The projection whose read model serves `GET /users/{id}`.
    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// Registers the user `command` describes. With an idempotency `key`
    /// the user id is derived from the key, so a retry finds the first
    /// attempt's outcome instead of registering twice.
    pub async fn register(&self, command: RegisterUser, key: Option<&str>) -> Result<Registered, RegisterError> {
        let id = match key {
            Some(key) => idempotent_user_id(key),
            None => uuid::Uuid::new_v4(),
        }
        .to_string();
        // A random id is new by construction (the append below checks it);
        // a key's id may have been used by an earlier attempt.
        let user = if key.is_some() { self.reservations.user(&id).await? } else { User::New };
        let now = now_ms();
        let hash = match &user {
            User::New => self.hasher.hash(&command.password).await.map_err(RegisterError::Internal)?,
            _ => String::new(),
        };
        let event = match user.register(&id, &command, hash, projector_guest_sdk::rfc3339_from_ms(now)) {
            Ok(event) => event,
            Err(refusal) => return self.answer_retry(&id, &command, refusal).await,
        };
        // Kept, not released, whatever happens next: see below.
        let _held = self.reserve(&id, &command, now).await?;
        match self.store.append(&user_stream(&id), ExpectedRevision::NoStream, &event).await {
            Ok(written) => {
                tracing::info!(user = %id, position = written.position.commit, "user registered");
                Ok(Registered { id, position: written.position.commit, replayed: false })
            }
            Err(StoreError::WrongRevision) => {
                // Another attempt under the same key got there first, or this
                // request stalled past its lease and was fenced. The values
                // stay as they are: a reservation whose holder registered with
                // other values, or was fenced, is free for the next request.
                let refusal = match self.reservations.user(&id).await? {
                    User::Registered { event, position } => {
                        Refusal::AlreadyRegistered { event: Box::new(event), position }
                    }
                    User::Abandoned | User::New => Refusal::Abandoned,
                };
                if key.is_none() {
                    // A random id: only a fence can have got there first.
                    return Err(RegisterError::Unavailable(
                        "the registration stalled past its reservation lease and was abandoned".to_owned(),
                    ));
                }
                self.answer_retry(&id, &command, refusal).await
            }
            // The outcome is unknown: the reservations stay, so that the
            // values are not given away if the append did land.
            Err(e) => Err(e.into()),
        }
    }

    /// The answer when user `id` exists already: the original response for
    /// a retry of the same request, else why not.
    async fn answer_retry(
        &self,
        id: &str,
        command: &RegisterUser,
        refusal: Refusal,
    ) -> Result<Registered, RegisterError> {
        match refusal {
            Refusal::AlreadyRegistered { event, position } => {
                let same = event.email == command.email
                    && event.username == command.username
                    && self
                        .hasher
                        .verify(&command.password, &event.password_hash)
                        .await
                        .map_err(RegisterError::Internal)?;
                if same {
                    Ok(Registered { id: id.to_owned(), position, replayed: true })
                } else {
                    Err(RegisterError::KeyReused)
                }
            }
            Refusal::Abandoned => Err(RegisterError::KeyAbandoned),
        }
    }

    /// Reserves the email and the username together; if either is taken,
    /// gives back the other and reports every taken field.
    async fn reserve(&self, id: &str, command: &RegisterUser, now_ms: i64) -> Result<Vec<Held>, RegisterError> {
        let (email_key, username_key) = (command.email_key(), command.username_key());
        let (email, username) = tokio::join!(
            self.reservations.reserve(UniqueValue::Email, &email_key, id, now_ms),
            self.reservations.reserve(UniqueValue::Username, &username_key, id, now_ms),
        );
        let mut held = Vec::new();
        let mut taken = FieldErrors::new();
        let mut failure = None;
        for (kind, claim) in [(UniqueValue::Email, email), (UniqueValue::Username, username)] {
            match claim {
                Ok(Claim::Held(h)) => held.push(h),
                Ok(Claim::Taken { in_progress }) => {
                    let problem =
                        if in_progress { "is being registered by another request" } else { "is already registered" };
                    taken.insert(kind.field().to_owned(), problem.to_owned());
                }
                Err(e) => failure = Some(e),
            }
        }
        if taken.is_empty() && failure.is_none() {
            return Ok(held);
        }
        for h in &held {
            self.reservations.release(h, id).await;
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Err(RegisterError::Taken(taken)),
        }
    }
}

/// The user id a key stands for: a name-based UUID (version 5) in a
/// namespace of our own, so the same key always means the same user.
fn idempotent_user_id(key: &str) -> uuid::Uuid {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c0e_2b4a_9f1d_4e7b_8a35_1d2c_7f90_b3e4);
    uuid::Uuid::new_v5(&NAMESPACE, key.as_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
