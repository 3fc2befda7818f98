"""The projection's read model: JSON documents by collection and key."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Protocol, TypeVar

from .errors import ReadModelError
from .rules import InvalidJson, InvalidName, TooLarge, WriteRefusal, to_json

T = TypeVar("T")


class Backend(Protocol):
    """Where documents live: the host in a module, memory in the harness."""

    def get(self, collection: str, key: str) -> Optional[str]: ...

    def put(self, collection: str, key: str, text: str) -> Optional[WriteRefusal]: ...

    def delete(self, collection: str, key: str) -> None: ...


def refusal_message(refusal: WriteRefusal) -> str:
    """A refusal in words, as the Rust SDK words it."""
    if isinstance(refusal, TooLarge):
        return f"document is larger than the limit of {refusal.limit} bytes"
    if isinstance(refusal, InvalidJson):
        return f"document is not valid JSON: {refusal.message}"
    assert isinstance(refusal, InvalidName)
    return f"invalid collection or key: {refusal.message}"


class ReadModel:
    """The read model a projection reads and writes. Reads see the batch's
    earlier writes; a batch that fails keeps none of them."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def get(self, collection: str, key: str) -> Any:
        """The document under `key` in `collection`, parsed; None when there is none."""
        text = self._backend.get(collection, key)
        return None if text is None else json.loads(text)

    def put(self, collection: str, key: str, document: Any) -> None:
        """Stores `document` under `key`, replacing any. A refused write raises `ReadModelError`."""
        text = to_json(document)
        refused = text if not isinstance(text, str) else self._backend.put(collection, key, text)
        if refused is not None:
            raise ReadModelError(f"{collection}/{key}: {refusal_message(refused)}")

    def delete(self, collection: str, key: str) -> None:
        """Removes the document under `key`; removing nothing is not an error."""
        self._backend.delete(collection, key)

    def update(self, collection: str, key: str, initial: Callable[[], T], change: Callable[[T], Optional[T]]) -> None:
        """Reads the document (or `initial()` when there is none), changes it and stores it."""
        current = self.get(collection, key)
        if current is None:
            current = initial()
        changed = change(current)
        self.put(collection, key, current if changed is None else changed)
