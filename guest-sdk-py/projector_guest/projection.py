"""What a projection is: its description and how one event changes its documents."""

from __future__ import annotations

from typing import ClassVar, List, Sequence, Tuple

from .event import Event
from .model import ReadModel


class Projection:
    """Subclass it: set the description as class attributes and write `apply`.

    A projection keeps no state between events other than its read model,
    and must give the same documents for the same events: use
    `event.created_ms` for time, never the clock or random numbers (inside a
    module both are stubs). Raising fails the event, and the batch's writes
    are discarded.
    """

    #: The projection's name, e.g. `signup-stats`.
    name: ClassVar[str]
    #: The version of its logic, shown in status.
    version: ClassVar[str]
    #: Receive events whose type is exactly one of these.
    event_types: ClassVar[Sequence[str]] = ()
    #: Receive events whose type starts with one of these (with no type filter at all, every type).
    event_type_prefixes: ClassVar[Sequence[str]] = ()
    #: Receive events from streams whose name starts with one of these (every stream if none).
    streams: ClassVar[Sequence[str]] = ()
    #: Secondary indexes: (collection, dotted field path).
    indexes: ClassVar[Sequence[Tuple[str, str]]] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # A bare string is a sequence too: "order-" would mean six one-letter prefixes.
        for attribute in ("event_types", "event_type_prefixes", "streams"):
            value = getattr(cls, attribute)
            if isinstance(value, str) or not all(isinstance(item, str) for item in value):
                raise TypeError(f"{cls.__name__}.{attribute} must be a list of strings, e.g. [{value!r}]")
        for index in cls.indexes:
            if not (isinstance(index, tuple) and len(index) == 2 and all(isinstance(part, str) for part in index)):
                raise TypeError(f"{cls.__name__}.indexes holds {index!r}: each is a (collection, field) tuple")

    def apply(self, event: Event, model: ReadModel) -> None:
        raise NotImplementedError

    @classmethod
    def wants_type(cls, event_type: str) -> bool:
        """Whether the type filters accept `event_type`."""
        if not cls.event_types and not cls.event_type_prefixes:
            return True
        return event_type in cls.event_types or any(event_type.startswith(p) for p in cls.event_type_prefixes)

    @classmethod
    def wants_stream(cls, stream_id: str) -> bool:
        """Whether the stream filter accepts `stream_id`."""
        return not cls.streams or any(stream_id.startswith(p) for p in cls.streams)

    @classmethod
    def wants(cls, stream_id: str, event_type: str) -> bool:
        """Whether an event of this stream and type is delivered (system `$` types never)."""
        return not event_type.startswith("$") and cls.wants_type(event_type) and cls.wants_stream(stream_id)

    @classmethod
    def type_filter(cls) -> str:
        """The type filter, for messages."""
        parts: List[str] = []
        if cls.event_types:
            parts.append(f"event types {list(cls.event_types)}")
        if cls.event_type_prefixes:
            parts.append(f"event type prefixes {list(cls.event_type_prefixes)}")
        return " or ".join(parts) or "any type"
