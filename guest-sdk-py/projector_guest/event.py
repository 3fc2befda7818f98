"""One event as a projection sees it, with JSON, schema-version and
upcasting helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Generic, Optional, TypeVar

from .errors import InvalidEvent

T = TypeVar("T")


@dataclass(frozen=True)
class EventType(Generic[T]):
    """An event type and how to read each schema version of it still in the
    store: a function per version turning the JSON payload into the current
    shape (raising on a payload it refuses). The version travels in the
    metadata as `schemaVersion` (absent means 1)."""

    type: str
    versions: Dict[int, Callable[[Any], T]]


def event_type(type: str, versions: Dict[int, Callable[[Any], T]]) -> EventType[T]:
    """Defines an event type: its stored name and a reader per version."""
    return EventType(type, versions)


@dataclass(frozen=True)
class Event:
    """One event from the store."""

    stream_id: str
    event_type: str
    event_id: str
    stream_revision: int
    commit_position: int
    #: When the store accepted it, in milliseconds since the epoch: the projection's only clock.
    created_ms: int
    content_type: str
    data: bytes
    metadata: bytes

    def json(self) -> Any:
        """The payload parsed as JSON; `InvalidEvent` when it is not JSON."""
        try:
            return json.loads(self.data)
        except ValueError as e:
            raise InvalidEvent(f"{self.event_type} {self.stream_id}@{self.stream_revision}: {e}") from None

    def metadata_json(self) -> Any:
        """The metadata parsed as JSON (an empty dict when there is none)."""
        if not self.metadata:
            return {}
        try:
            return json.loads(self.metadata)
        except ValueError as e:
            raise InvalidEvent(f"metadata: {e}") from None

    def schema_version(self) -> int:
        """The schema version in the metadata (`schemaVersion`), 1 when absent
        (or when the metadata is not a JSON object), as the Rust SDK reads it."""
        metadata = self.metadata_json()
        version = metadata.get("schemaVersion", 1) if isinstance(metadata, dict) else 1
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= 0xFFFFFFFF:
            raise InvalidEvent(f"schemaVersion {json.dumps(version)} is not a version number")
        return version

    def decode(self, type: EventType[T]) -> Optional[T]:
        """The payload as `type`'s current shape, read by its version's
        reader; None for another type. An unknown version, or a payload the
        reader refuses, is an `InvalidEvent`."""
        if self.event_type != type.type:
            return None
        version = self.schema_version()
        reader = type.versions.get(version)
        if reader is None:
            known = ", ".join(str(v) for v in sorted(type.versions))
            raise InvalidEvent(f"{type.type} schema version {version} is unknown (known: {known})")
        payload = self.json()
        try:
            return reader(payload)
        except InvalidEvent:
            raise
        except Exception as e:  # the reader's refusal, in its own words
            raise InvalidEvent(f"{type.type} v{version} {self.stream_id}@{self.stream_revision}: {e}") from None

    def created_rfc3339(self) -> str:
        """When the store accepted it, as RFC 3339 with milliseconds (`2026-11-23T12:00:00.000Z`)."""
        at = datetime.fromtimestamp(self.created_ms / 1000, tz=timezone.utc)
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.created_ms % 1000:03d}Z"

    def created_date(self) -> str:
        """The UTC day it was accepted, `YYYY-MM-DD`."""
        return datetime.fromtimestamp(self.created_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
