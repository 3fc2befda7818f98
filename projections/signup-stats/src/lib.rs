//! `signup-stats`: sign-up counts per email domain and per day.
//!
//! Collections:
//! - `domains`, keyed by the lower-cased email domain: `{ domain, count }`.
//! - `days`, keyed by `YYYY-MM-DD` (UTC, from `registeredAt`, or the stored
//!   time for version 1 events): `{ day, count }`.
#![deny(missing_docs)]

use projector_events::UserRegistered;
use projector_guest_sdk::{Description, Error, Event, EventSchema, Projection, ReadModel, Result};
use serde::{Deserialize, Serialize};

/// The projection.
#[derive(Debug)]
pub struct SignupStats;

/// Sign-ups for one email domain.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCount {
    /// The domain, lower-cased.
    pub domain: String,
    /// How many users registered with it.
    pub count: u64,
}

/// Sign-ups on one day.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCount {
    /// The day, `YYYY-MM-DD` in UTC.
    pub day: String,
    /// How many users registered that day.
    pub count: u64,
}

impl Projection for SignupStats {
    fn description() -> Description {
        Description::new("signup-stats", "1.0.0").event_types([UserRegistered::TYPE]).streams(["user-"])
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        let Some(registered) = event.decode::<UserRegistered>()? else { return Ok(()) };
        let domain = registered
            .email
            .rsplit_once('@')
            .map(|(_, domain)| domain.trim().to_lowercase())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| Error::invalid_event(format!("'{}' has no email domain", registered.email)))?;
        let day = match &registered.registered_at {
            Some(at) if at.len() >= 10 => at[..10].to_owned(),
            Some(at) => return Err(Error::invalid_event(format!("registeredAt '{at}' is not a timestamp"))),
            None => event.created_date(),
        };
        model.update("domains", &domain, |c: &mut DomainCount| {
            c.domain.clone_from(&domain);
            c.count += 1;
        })?;
        model.update("days", &day, |c: &mut DayCount| {
            c.day.clone_from(&day);
            c.count += 1;
        })
    }
}

projector_guest_sdk::export_projection!(SignupStats);

#[cfg(test)]
mod tests {
    use super::*;
    use projector_guest_sdk::testing::{Harness, TestEvent};
    use serde_json::json;

    fn signup(n: u32, email: &str, at: &str) -> TestEvent {
        TestEvent::json(
            "UserRegistered",
            &json!({"userId": format!("u{n}"), "email": email, "username": format!("user{n}"),
                    "passwordHash": "h", "registeredAt": at}),
        )
        .stream(&format!("user-u{n}"))
        .schema_version(2)
    }

    #[test]
    fn counts_per_domain_case_insensitively_and_per_day() {
        let mut harness = Harness::<SignupStats>::new();
        harness
            .given([
                signup(1, "a@Example.com", "2026-11-22T23:59:59Z"),
                signup(2, "b@example.COM", "2026-11-23T00:00:00Z"),
                signup(3, "c@other.org", "2026-11-23T08:00:00Z"),
            ])
            .expect("applies");
        assert_eq!(harness.document("domains", "example.com"), Some(&json!({"domain": "example.com", "count": 2})));
        assert_eq!(harness.document("domains", "other.org"), Some(&json!({"domain": "other.org", "count": 1})));
        assert_eq!(harness.document("days", "2026-11-22"), Some(&json!({"day": "2026-11-22", "count": 1})));
        assert_eq!(harness.document("days", "2026-11-23"), Some(&json!({"day": "2026-11-23", "count": 2})));
    }

    #[test]
    fn counts_accumulate_across_batches_and_v1_events_use_the_stored_day() {
        let mut harness = Harness::<SignupStats>::new();
        harness.given([signup(1, "a@example.com", "2026-11-23T10:00:00Z")]).expect("first batch");
        let v1 = TestEvent::json(
            "UserRegistered",
            &json!({"userId": "u9", "email": "z@example.com", "username": "z", "passwordHash": "h"}),
        )
        .stream("user-u9")
        .created_ms(1_795_435_200_000);
        harness.given([v1]).expect("second batch");
        assert_eq!(harness.document("domains", "example.com"), Some(&json!({"domain": "example.com", "count": 2})));
        assert_eq!(harness.document("days", "2026-11-23"), Some(&json!({"day": "2026-11-23", "count": 2})));
    }

    #[test]
    fn an_email_without_a_domain_faults_at_that_event() {
        let mut harness = Harness::<SignupStats>::new();
        let err = harness
            .given([signup(1, "a@example.com", "2026-11-23T10:00:00Z"), signup(2, "nodomain", "2026-11-23T10:00:00Z")])
            .expect_err("fails");
        assert_eq!(err.event_index, 1);
        assert!(harness.collections().is_empty());
    }
}
