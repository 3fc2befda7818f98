//! User registration, handled natively rather than in Wasm: validate the
//! command, look whether the email or username is taken (a cheap read, so a
//! duplicate costs no hash), hash the password (a bounded number at a time;
//! 503 beyond), hold the email and username through reservation streams,
//! and append `UserRegistered` (schema version 2) to `user-{id}` with
//! expected revision `no_stream` (docs/adr/0006, docs/adr/0010).
//!
//! Reads do not come from here: `GET /users/{id}` is served from the read
//! model of the user directory projection (`http::users`), never from the
//! event stream.

mod aggregate;
mod command;
mod password;
mod secret;
mod store;
mod uniqueness;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventstore::ExpectedRevision;
use projector_events::{user_stream, UniqueValue};

use aggregate::{Refusal, User, REQUEST_DIGEST};
pub use command::{FieldErrors, Password, RegisterUser, EMAIL_MAX, PASSWORD_CHARS, USERNAME_CHARS};
pub use password::{Argon2Settings, Hasher};
pub use secret::RegistrationSecret;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
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
    /// How many password hashes run at once (one per core by default).
    pub hash_threads: usize,
    /// How many registrations may wait for a hashing thread beyond those
    /// hashing; a registration that would wait beyond them is answered 503
    /// at once, without a hash. Default: 16 per core.
    pub hash_queue: usize,
}

impl RegistrationConfig {
    /// Waiting registrations allowed per core by default.
    pub const HASH_QUEUE_PER_CORE: usize = 16;

    /// The default queue bound on this machine.
    pub fn default_hash_queue() -> usize {
        RegistrationConfig::HASH_QUEUE_PER_CORE * password::cores()
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            hash_threads: password::cores(),
            hash_queue: RegistrationConfig::default_hash_queue(),
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
    /// 422: the idempotency key was used before with another body (any
    /// difference, the password included, gives this same answer).
    #[error("the idempotency key was used with a different request")]
    KeyReused,
    /// 503 with `Retry-After`: every hashing thread is busy and the queue
    /// for them is full; nothing was done.
    #[error("too many registrations are waiting for a password hash")]
    Busy,
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
    /// Permits for hashing and for waiting to hash; none left: 503.
    admission: Arc<Semaphore>,
    secret: RegistrationSecret,
    metrics: Arc<Metrics>,
    /// Values known to be registered (so taken for good): the cheap look
    /// answers them without reading the store. Bounded; emptied when full.
    registered: Arc<parking_lot::Mutex<std::collections::HashSet<(UniqueValue, String)>>>,
    directory: String,
}

/// How many registered values [`Registrations`] remembers.
const REMEMBERED_VALUES: usize = 100_000;

impl Registrations {
    /// A handler appending through `client`, deriving ids and request
    /// digests with `secret`, counting its hashes in `metrics`.
    pub fn new(
        client: eventstore::Client,
        config: RegistrationConfig,
        secret: RegistrationSecret,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Registrations> {
        let store = Store::new(client, config.store_timeout);
        Ok(Registrations {
            reservations: Reservations::new(store.clone(), config.lease),
            store,
            hasher: Hasher::with_threads(config.argon2, config.hash_threads)?,
            admission: Arc::new(Semaphore::new(config.hash_threads.saturating_add(config.hash_queue))),
            secret,
            metrics,
            registered: Arc::default(),
            directory: config.directory,
        })
    }

    /// The projection whose read model serves `GET /users/{id}`.
    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// Registers the user `command` describes. With an idempotency `key`
    /// the user id is derived from the secret, the key and the email, so a
    /// retry finds the first attempt's outcome instead of registering twice,
    /// and is answered from it when its digest is the first request's.
    pub async fn register(&self, command: RegisterUser, key: Option<&str>) -> Result<Registered, RegisterError> {
        let id = match key {
            Some(key) => self.secret.user_id(key, &command.email_key()),
            None => uuid::Uuid::new_v4(),
        }
        .to_string();
        let digest = key.map(|_| self.secret.digest(&command));
        // A random id is new by construction (the append below checks it);
        // a key's id may have been used by an earlier attempt.
        let user = if key.is_some() { self.reservations.user(&id).await? } else { User::New };
        let now = now_ms();
        let hash = match &user {
            User::New => {
                self.refuse_taken(&id, &command, now).await?;
                self.hash(&command.password).await?
            }
            _ => String::new(),
        };
        let event = match user.register(&id, &command, hash, projector_guest_sdk::rfc3339_from_ms(now)) {
            Ok(event) => event,
            Err(refusal) => return answer_retry(&id, digest.as_deref(), refusal),
        };
        // Kept, not released, whatever happens next: see below.
        let _held = self.reserve(&id, &command, now).await?;
        let notes: Vec<(&str, &str)> = digest.iter().map(|d| (REQUEST_DIGEST, d.as_str())).collect();
        match self.store.append_noted(&user_stream(&id), ExpectedRevision::NoStream, &event, &notes).await {
            Ok(written) => {
                tracing::info!(user = %id, position = written.position.commit, "user registered");
                self.remember_registered(UniqueValue::Email, command.email_key());
                self.remember_registered(UniqueValue::Username, command.username_key());
                Ok(Registered { id, position: written.position.commit, replayed: false })
            }
            Err(StoreError::WrongRevision) => {
                // Another attempt under the same key got there first, or this
                // request stalled past its lease and was fenced. The values
                // stay as they are: a reservation whose holder registered with
                // other values, or was fenced, is free for the next request.
                let refusal = match self.reservations.user(&id).await? {
                    User::Registered { event, position, digest } => {
                        Refusal::AlreadyRegistered { event: Box::new(event), position, digest }
                    }
                    User::Abandoned | User::New => Refusal::Abandoned,
                };
                if key.is_none() {
                    // A random id: only a fence can have got there first.
                    return Err(RegisterError::Unavailable(
                        "the registration stalled past its reservation lease and was abandoned".to_owned(),
                    ));
                }
                answer_retry(&id, digest.as_deref(), refusal)
            }
            // The outcome is unknown: the reservations stay, so that the
            // values are not given away if the append did land.
            Err(e) => Err(e.into()),
        }
    }

    /// The cheap check before the hash: 409 if another user holds the email
    /// or the username now (read only; `reserve` decides for good).
    async fn refuse_taken(&self, id: &str, command: &RegisterUser, now_ms: i64) -> Result<(), RegisterError> {
        let (email_key, username_key) = (command.email_key(), command.username_key());
        let look = |kind: UniqueValue, value: String| async move {
            if self.registered.lock().contains(&(kind, value.clone())) {
                return Ok(Some(false));
            }
            let holder = self.reservations.holder_other_than(kind, &value, id, now_ms).await?;
            if holder == Some(false) {
                self.remember_registered(kind, value);
            }
            Ok::<_, StoreError>(holder)
        };
        let (email, username) =
            tokio::join!(look(UniqueValue::Email, email_key), look(UniqueValue::Username, username_key));
        let mut taken = FieldErrors::new();
        for (kind, holder) in [(UniqueValue::Email, email?), (UniqueValue::Username, username?)] {
            if let Some(in_progress) = holder {
                taken.insert(kind.field().to_owned(), taken_problem(in_progress).to_owned());
            }
        }
        if taken.is_empty() {
            Ok(())
        } else {
            Err(RegisterError::Taken(taken))
        }
    }

    /// Remembers that `value` of `kind` is registered: taken for good, since
    /// no event gives a registered value back (ADR 0006; a rename or delete,
    /// if ever built, must forget it here too).
    fn remember_registered(&self, kind: UniqueValue, value: String) {
        let mut registered = self.registered.lock();
        if registered.len() >= REMEMBERED_VALUES {
            registered.clear();
        }
        registered.insert((kind, value));
    }

    /// Hashes `password` if a hashing thread is free or the queue for them
    /// has room; else 503 at once.
    async fn hash(&self, password: &Password) -> Result<String, RegisterError> {
        let Ok(_admission) = self.admission.clone().try_acquire_owned() else {
            self.metrics.registration_shed("queue_full");
            return Err(RegisterError::Busy);
        };
        let _admitted = self.metrics.hash_admitted();
        let hash = self.hasher.hash(password).await.map_err(RegisterError::Internal)?;
        self.metrics.password_hashed();
        Ok(hash)
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
                    taken.insert(kind.field().to_owned(), taken_problem(in_progress).to_owned());
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

/// The answer when user `id` exists already: the original response for a
/// retry of the same request (equal digests), else one answer for any
/// difference. A registration recorded without a digest (no key, or
/// appended before digests existed) is never replayed: nothing short of
/// verifying the password could tell a retry, and that is what made the
/// replay a password oracle.
fn answer_retry(id: &str, digest: Option<&str>, refusal: Refusal) -> Result<Registered, RegisterError> {
    match refusal {
        Refusal::AlreadyRegistered { position, digest: Some(stored), .. }
            if digest.is_some_and(|d| secret::same_digest(d, &stored)) =>
        {
            Ok(Registered { id: id.to_owned(), position, replayed: true })
        }
        Refusal::AlreadyRegistered { .. } => Err(RegisterError::KeyReused),
        Refusal::Abandoned => Err(RegisterError::KeyAbandoned),
    }
}

/// What a 409 says of a value someone else holds.
fn taken_problem(in_progress: bool) -> &'static str {
    if in_progress {
        "is being registered by another request"
    } else {
        "is already registered"
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
