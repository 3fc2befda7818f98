//! Unique emails and usernames through the event store's own optimistic
//! concurrency (docs/adr/0006-unique-emails-and-usernames.md).
//!
//! Each value has a reservation stream whose last event names its holder.
//! Taking a value is a conditional append to that stream (`no_stream` for a
//! new value, the revision just read for a takeover), so of any number of
//! concurrent requests exactly one takes it. A holder that has not
//! registered keeps the value for a lease; after that, or once it has
//! released the value, another request may take the value over, but only
//! after fencing the holder (`RegistrationAbandoned` as the first event of
//! its user stream), so that a stalled holder can never register later.

use std::time::Duration;

use eventstore::ExpectedRevision;
use projector_events::{user_stream, RegistrationAbandoned, ReservationReleased, UniqueValue, ValueReserved};

use super::aggregate::User;
use super::store::{decode, Store, StoreError};

/// How many times a request re-reads a value that others keep changing
/// before it gives up (503).
const ATTEMPTS: usize = 4;

/// A value this request holds, at `revision` of its reservation stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) kind: UniqueValue,
    stream: String,
    revision: u64,
}

/// The outcome of trying to reserve a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This request holds the value.
    Held(Held),
    /// Someone else holds it: a registered user, or a registration in progress.
    Taken { in_progress: bool },
}

/// Who holds a value, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    /// This request's user holds it.
    Ours,
    /// Free to take: released by this request's user, or its holder
    /// registered with another value or was fenced.
    Free,
    /// Another user holds it: registered, or registering within the lease.
    Taken { in_progress: bool },
    /// Held by a user who has not registered within the lease (or gave it
    /// back): free once that user is fenced.
    Stale(String),
}

/// Reserves unique values for registrations.
#[derive(Debug, Clone)]
pub(crate) struct Reservations {
    store: Store,
    lease: Duration,
}

impl Reservations {
    pub(crate) fn new(store: Store, lease: Duration) -> Reservations {
        Reservations { store, lease }
    }

    /// Tries to reserve `value` (normalised) of `kind` for user `user_id`.
    pub(crate) async fn reserve(
        &self,
        kind: UniqueValue,
        value: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        let stream = kind.stream(value);
        let reserved =
            ValueReserved { kind, value: value.to_owned(), user_id: user_id.to_owned(), reserved_at_ms: now_ms };
        let mut expected = ExpectedRevision::NoStream;
        for _ in 0..ATTEMPTS {
            match self.store.append(&stream, expected, &reserved).await {
                Ok(written) => return Ok(Claim::Held(Held { kind, stream, revision: written.next_expected_version })),
                Err(StoreError::WrongRevision) => {}
                Err(e) => return Err(e),
            }
            let Some(last) = self.store.last(&stream).await? else {
                expected = ExpectedRevision::NoStream;
                continue;
            };
            let revision = last.revision;
            match self.standing(kind, value, &last, user_id, now_ms).await? {
                Standing::Ours => return Ok(Claim::Held(Held { kind, stream, revision })),
                Standing::Taken { in_progress } => return Ok(Claim::Taken { in_progress }),
                Standing::Free => {}
                Standing::Stale(holder) => {
                    if !self.fence(&holder, kind, value).await? {
                        return Ok(Claim::Taken { in_progress: false });
                    }
                }
            }
            expected = ExpectedRevision::Exact(revision);
        }
        Err(StoreError::Unavailable(format!("'{stream}' kept changing while this request tried to reserve it")))
    }

    /// Whether someone other than `user_id` holds `value` now, read without
    /// writing anything: `Some(in_progress)` if so. A cheap look before the
    /// expensive part of a registration; [`Reservations::reserve`] stays the
    /// authority (the answer may be stale by the time it is used).
    pub(crate) async fn holder_other_than(
        &self,
        kind: UniqueValue,
        value: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Option<bool>, StoreError> {
        let Some(last) = self.store.last(&kind.stream(value)).await? else { return Ok(None) };
        Ok(match self.standing(kind, value, &last, user_id, now_ms).await? {
            Standing::Taken { in_progress } => Some(in_progress),
            Standing::Ours | Standing::Free | Standing::Stale(_) => None,
        })
    }

    /// Who holds `value` of `kind`, by `last`, the last event of its
    /// reservation stream, as seen by a request for user `user_id`.
    async fn standing(
        &self,
        kind: UniqueValue,
        value: &str,
        last: &eventstore::RecordedEvent,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Standing, StoreError> {
        let (holder, expired) = if let Some(r) = decode::<ValueReserved>(last)? {
            if r.user_id == user_id {
                // Another attempt at the same idempotent request holds it:
                // both may go on, only one can append the registration.
                return Ok(Standing::Ours);
            }
            let age_ms = now_ms.saturating_sub(r.reserved_at_ms);
            (r.user_id, u128::try_from(age_ms).unwrap_or(0) >= self.lease.as_millis())
        } else if let Some(r) = decode::<ReservationReleased>(last)? {
            (r.user_id, true)
        } else {
            return Err(StoreError::Failed(anyhow::anyhow!(
                "'{}' ends with an unexpected '{}' event",
                last.stream_id,
                last.event_type
            )));
        };
        if holder == user_id {
            return Ok(Standing::Free);
        }
        Ok(match self.user(&holder).await? {
            User::Registered { event, .. } if kind.of(&event) == value => Standing::Taken { in_progress: false },
            // Registered with another value (an attempt under the same
            // idempotency key with another body), or fenced.
            User::Registered { .. } | User::Abandoned => Standing::Free,
            User::New if !expired => Standing::Taken { in_progress: true },
            User::New => Standing::Stale(holder),
        })
    }

    /// Gives a value back after a registration that will not happen. Best
    /// effort: a value left reserved is taken over after the lease.
    pub(crate) async fn release(&self, held: &Held, user_id: &str) {
        let released = ReservationReleased { user_id: user_id.to_owned() };
        match self.store.append(&held.stream, ExpectedRevision::Exact(held.revision), &released).await {
            Ok(_) | Err(StoreError::WrongRevision) => {}
            Err(e) => {
                tracing::warn!(stream = %held.stream, "cannot release a reservation (it expires with its lease): {e}")
            }
        }
    }

    /// Makes sure `holder` can never register with `value`: true if it is
    /// (or now is) abandoned or registered with another value, false if it
    /// registered with this one.
    async fn fence(&self, holder: &str, kind: UniqueValue, value: &str) -> Result<bool, StoreError> {
        let stream = user_stream(holder);
        let abandoned = RegistrationAbandoned {
            user_id: holder.to_owned(),
            reason: format!("another registration took over its {} reservation", kind.field()),
        };
        match self.store.append(&stream, ExpectedRevision::NoStream, &abandoned).await {
            Ok(_) => {
                tracing::info!(user = holder, field = kind.field(), "fenced a registration that did not complete");
                Ok(true)
            }
            Err(StoreError::WrongRevision) => Ok(match self.user(holder).await? {
                User::Registered { event, .. } => kind.of(&event) != value,
                User::Abandoned => true,
                User::New => false,
            }),
            Err(e) => Err(e),
        }
    }

    /// User `id` as their stream shows them.
    pub(crate) async fn user(&self, id: &str) -> Result<User, StoreError> {
        User::from_first(self.store.first(&user_stream(id)).await?.as_ref())
    }
}
