"""The errors a projection reports. Each becomes the contract's
`handle-error` for the event being applied: the host faults the
projection (or dead-letters the event under on_error=skip) with the
message and discards the batch's writes."""

from __future__ import annotations

from typing import Tuple


class InvalidEvent(Exception):
    """The event does not have the shape the projection expects."""


class ReadModelError(Exception):
    """A read-model operation failed (a write the host refused)."""


def to_handle_error(error: BaseException) -> Tuple[str, str]:
    """Any exception as (kind, message): `invalid-event`, `read-model` or `other`."""
    if isinstance(error, InvalidEvent):
        return "invalid-event", str(error)
    if isinstance(error, ReadModelError):
        return "read-model", str(error)
    message = str(error)
    name = type(error).__name__
    return "other", f"{name}: {message}" if message else name


def handle_error_message(kind: str, message: str) -> str:
    """The message a host shows for a `handle-error`."""
    if kind == "invalid-event":
        return f"invalid event: {message}"
    if kind == "read-model":
        return f"read model: {message}"
    return message
