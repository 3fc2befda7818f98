"""Tests for projections, run natively with pytest: events in, documents
out, with the host's rules. A batch is applied whole or not at all, a write
the host would refuse is refused here the same way, and an event the
projection would never receive fails the batch unless it is marked
`expect_ignored()`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple, Type

from . import log
from .determinism import forbid_clock_and_randomness
from .errors import handle_error_message, to_handle_error
from .event import Event
from .model import ReadModel
from .projection import Projection
from .rules import MAX_DOCUMENT_BYTES, WriteRefusal, check_name, check_put

_EPOCH_2026_MS = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


class TestEvent:
    """An event to give the harness, built step by step."""

    __test__ = False  # not a pytest test class

    def __init__(self, event_type: str, data: bytes) -> None:
        self.event_type = event_type
        self.data = data
        self._stream: Optional[str] = None
        self._metadata: Optional[Dict[str, Any]] = None
        self._created_ms: Optional[int] = None
        self.expected_ignored = False

    @classmethod
    def json(cls, event_type: str, data: Any) -> "TestEvent":
        """An event whose payload is `data` as JSON."""
        return cls(event_type, json.dumps(data).encode())

    @classmethod
    def raw(cls, event_type: str, data: "bytes | str") -> "TestEvent":
        """An event whose payload is these bytes or this text as they are (e.g. not JSON)."""
        return cls(event_type, data.encode() if isinstance(data, str) else data)

    def stream(self, stream_id: str) -> "TestEvent":
        """Its stream (default `test`)."""
        self._stream = stream_id
        return self

    def schema_version(self, version: int) -> "TestEvent":
        """Its schema version, written to the metadata as `schemaVersion`."""
        self._metadata = {**(self._metadata or {}), "schemaVersion": version}
        return self

    def metadata(self, metadata: Dict[str, Any]) -> "TestEvent":
        """Its metadata, as JSON."""
        self._metadata = {**(self._metadata or {}), **metadata}
        return self

    def created_ms(self, ms: int) -> "TestEvent":
        """When the store accepted it (default: 2026-01-01 plus its position in seconds)."""
        self._created_ms = ms
        return self

    def expect_ignored(self) -> "TestEvent":
        """Says the projection must not receive it (a test that it is ignored)."""
        self.expected_ignored = True
        return self

    @property
    def stream_id(self) -> str:
        return self._stream or "test"

    def to_event(self, position: int, revision: int) -> Event:
        return Event(
            stream_id=self.stream_id,
            event_type=self.event_type,
            event_id=f"00000000-0000-4000-8000-{position:012x}",
            stream_revision=revision,
            commit_position=position,
            created_ms=self._created_ms if self._created_ms is not None else _EPOCH_2026_MS + position * 1000,
            content_type="application/json",
            data=self.data,
            metadata=json.dumps(self._metadata).encode() if self._metadata is not None else b"",
        )


class BatchError(Exception):
    """A failed batch: which event (counting every event given) and why. Nothing of it is kept."""

    def __init__(self, event_index: int, kind: str, message: str) -> None:
        super().__init__(f"event {event_index}: {handle_error_message(kind, message)}")
        self.event_index = event_index
        self.kind = kind
        self.message = message


Documents = Dict[str, Dict[str, str]]


class Harness:
    """Runs a projection over events given in batches, with an in-memory read model."""

    def __init__(self, projection: Type[Projection], document_bytes: int = MAX_DOCUMENT_BYTES) -> None:
        self._projection = projection
        self._documents: Documents = {}
        self._revisions: Dict[str, int] = {}
        self._position = 0
        self._limit = document_bytes
        self._logs: List[Tuple[str, str]] = []

    def given(self, events: List[TestEvent]) -> None:
        """Applies `events` as one batch, as the host would, with a new
        instance of the projection (the host makes new ones whenever it
        likes, so nothing kept on `self` survives). Raises `BatchError` and
        keeps none of the batch's writes when one fails; its events keep their
        positions and revisions, as events in the store do. An event that
        would never reach the projection, or one marked `expect_ignored` that
        would, fails the batch before anything runs, and then it takes no
        positions either."""
        for index, test in enumerate(events):
            if self._projection.wants(test.stream_id, test.event_type) == test.expected_ignored:
                raise BatchError(index, "other", _misdelivery(self._projection, index, test))
        delivered: List[Tuple[int, Event]] = []
        for index, test in enumerate(events):
            # Every event takes a revision and a position, delivered or not.
            revision = self._revisions.get(test.stream_id, 0)
            self._revisions[test.stream_id] = revision + 1
            self._position += 1
            if not test.expected_ignored:
                delivered.append((index, test.to_event(self._position, revision)))
        scratch = _Scratch(self._documents, self._limit)
        model = ReadModel(scratch)
        instance = self._projection()
        previous = log.set_writer(lambda level, message: self._logs.append((level, message)))
        restore = forbid_clock_and_randomness()
        try:
            for index, event in delivered:
                try:
                    instance.apply(event, model)
                except Exception as e:
                    kind, message = to_handle_error(e)
                    raise BatchError(index, kind, message) from e
        finally:
            restore()
            log.set_writer(previous)
        scratch.commit()

    def document(self, collection: str, key: str) -> Any:
        """A committed document, parsed; None when there is none."""
        text = self._documents.get(collection, {}).get(key)
        return None if text is None else json.loads(text)

    def collection(self, collection: str) -> Dict[str, Any]:
        """A collection's committed documents by key, in key order."""
        return {key: json.loads(text) for key, text in sorted(self._documents.get(collection, {}).items())}

    def collections(self) -> List[str]:
        """The collections holding documents, sorted."""
        return sorted(name for name, documents in self._documents.items() if documents)

    def take_logs(self) -> List[Tuple[str, str]]:
        """The log lines written so far, oldest first; clears them."""
        logs, self._logs = self._logs, []
        return logs


class _Scratch:
    """The batch's writes over the committed documents."""

    def __init__(self, base: Documents, limit: int) -> None:
        self._base = base
        self._limit = limit
        self._writes: Dict[Tuple[str, str], Optional[str]] = {}

    def get(self, collection: str, key: str) -> Optional[str]:
        if (collection, key) in self._writes:
            return self._writes[(collection, key)]
        return self._base.get(collection, {}).get(key)

    def put(self, collection: str, key: str, text: str) -> Optional[WriteRefusal]:
        refused = check_put(collection, key, text, self._limit)
        if refused is None:
            self._writes[(collection, key)] = text
        return refused

    def delete(self, collection: str, key: str) -> None:
        # Nothing can be stored under a name `put` refuses, so there is nothing to delete.
        if check_name(collection, key) is None:
            self._writes[(collection, key)] = None

    def commit(self) -> None:
        for (collection, key), text in self._writes.items():
            documents = self._base.setdefault(collection, {})
            if text is None:
                documents.pop(key, None)
            else:
                documents[key] = text


def _misdelivery(projection: Type[Projection], index: int, test: TestEvent) -> str:
    event = f"event {index} (stream `{test.stream_id}`, type `{test.event_type}`)"
    if test.expected_ignored:
        streams = f"stream prefixes {list(projection.streams)}" if projection.streams else "any stream"
        return f"{event} is marked `expect_ignored` but `{projection.name}` wants it: {streams}; {projection.type_filter()}"
    reasons = []
    if test.event_type.startswith("$"):
        reasons.append("`$` types are system events, never delivered")
    if not projection.wants_type(test.event_type):
        reasons.append(f"its type is not one the projection asks for ({projection.type_filter()})")
    if not projection.wants_stream(test.stream_id):
        hint = " (`test` is the default: set one with `.stream(...)`)" if test._stream is None else ""
        reasons.append(f"its stream matches none of the stream prefixes {list(projection.streams)}{hint}")
    return (
        f"{event} would never reach `{projection.name}`: {'; '.join(reasons)}; give it a stream and type the "
        "projection wants, or mark it `.expect_ignored()` to test that it is ignored"
    )
