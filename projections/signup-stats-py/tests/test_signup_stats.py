import pytest

from projector_guest.testing import BatchError, Harness, TestEvent
from signup_stats import SignupStats


def signup(n: int, email: str, at: str) -> TestEvent:
    return (
        TestEvent.json(
            "UserRegistered",
            {"userId": f"u{n}", "email": email, "username": f"user{n}", "passwordHash": "h", "registeredAt": at},
        )
        .stream(f"user-u{n}")
        .schema_version(2)
    )


def test_counts_per_domain_and_day():
    harness = Harness(SignupStats)
    harness.given(
        [
            signup(1, "a@Example.com", "2026-11-22T08:00:00Z"),
            signup(2, "b@example.COM ", "2026-11-23T08:00:00Z"),
            signup(3, "c@other.org", "2026-11-23T09:00:00Z"),
        ]
    )
    assert harness.collection("domains") == {
        "example.com": {"domain": "example.com", "count": 2},
        "other.org": {"domain": "other.org", "count": 1},
    }
    assert harness.document("days", "2026-11-23") == {"day": "2026-11-23", "count": 2}


def test_version_one_events_count_on_their_stored_day():
    harness = Harness(SignupStats)
    v1 = (
        TestEvent.json("UserRegistered", {"userId": "u0", "email": "old@x.org", "username": "o", "passwordHash": "h"})
        .stream("user-u0")
        .created_ms(1_795_435_200_000)
    )
    harness.given([v1])
    assert harness.document("days", "2026-11-23") == {"day": "2026-11-23", "count": 1}


def test_an_email_without_a_domain_fails_the_batch():
    harness = Harness(SignupStats)
    with pytest.raises(BatchError) as failed:
        harness.given([signup(1, "a@x.org", "2026-11-23T08:00:00Z"), signup(2, "nobody", "2026-11-23T08:00:00Z")])
    assert (failed.value.event_index, failed.value.kind) == (1, "invalid-event")
    assert failed.value.message == "'nobody' has no email domain"
    assert harness.collections() == []


def test_a_version_two_event_without_registered_at_is_refused():
    harness = Harness(SignupStats)
    event = TestEvent.json("UserRegistered", {"userId": "u", "email": "a@x", "username": "u", "passwordHash": "h"})
    with pytest.raises(BatchError) as failed:
        harness.given([event.stream("user-u").schema_version(2)])
    assert failed.value.kind == "invalid-event"
    assert "missing ['registeredAt']" in failed.value.message
