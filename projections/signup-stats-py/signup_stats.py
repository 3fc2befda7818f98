"""`signup-stats` in Python: sign-up counts per email domain and per day,
the same read model as the Rust projection.

Collections:
- `domains`, keyed by the lower-cased email domain: `{ domain, count }`.
- `days`, keyed by `YYYY-MM-DD` (UTC, from `registeredAt`, or the stored
  time for version 1 events): `{ day, count }`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from projector_guest import Event, InvalidEvent, Projection, ReadModel, event_type


@dataclass(frozen=True)
class UserRegistered:
    """A user registered, at its current shape (version 2 added `registered_at`)."""

    user_id: str
    email: str
    username: str
    registered_at: Optional[str]


_V1_FIELDS = {"userId", "email", "username", "passwordHash"}


def _read(payload: Any, fields: set) -> dict:
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    if set(payload) != fields:
        missing, unknown = sorted(fields - set(payload)), sorted(set(payload) - fields)
        raise ValueError(f"missing {missing}, unknown {unknown}")
    if not all(isinstance(payload[f], str) for f in fields):
        raise ValueError("every field is a string")
    return payload


def _v1(payload: Any) -> UserRegistered:
    p = _read(payload, _V1_FIELDS)
    return UserRegistered(p["userId"], p["email"], p["username"], None)


def _v2(payload: Any) -> UserRegistered:
    p = _read(payload, _V1_FIELDS | {"registeredAt"})
    return UserRegistered(p["userId"], p["email"], p["username"], p["registeredAt"])


USER_REGISTERED = event_type("UserRegistered", {1: _v1, 2: _v2})


class SignupStats(Projection):
    name = "signup-stats"
    version = "1.0.0"
    event_types = [USER_REGISTERED.type]
    streams = ["user-"]

    def apply(self, event: Event, model: ReadModel) -> None:
        registered = event.decode(USER_REGISTERED)
        if registered is None:
            return
        _, at, domain = registered.email.rpartition("@")
        domain = domain.strip().lower()
        if not at or not domain:
            raise InvalidEvent(f"'{registered.email}' has no email domain")
        if registered.registered_at is None:
            day = event.created_date()
        elif len(registered.registered_at) >= 10:
            day = registered.registered_at[:10]
        else:
            raise InvalidEvent(f"registeredAt '{registered.registered_at}' is not a timestamp")
        model.update("domains", domain, lambda: {"domain": domain, "count": 0}, _count)
        model.update("days", day, lambda: {"day": day, "count": 0}, _count)


def _count(document: dict) -> None:
    document["count"] += 1
