"""The rules a projection's writes must follow: the same as the host's
(guest-sdk/src/rules.rs), so a write the test harness accepts is one the
host accepts, refused with the same kind of error when it is not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Union

#: The largest document the host stores by default, in bytes of JSON text.
MAX_DOCUMENT_BYTES = 1 << 20
#: The longest collection name, in bytes of UTF-8.
MAX_COLLECTION_BYTES = 256
#: The longest key, in bytes of UTF-8.
MAX_KEY_BYTES = 1024
#: The deepest nesting of arrays and objects the host accepts.
MAX_DEPTH = 128


@dataclass(frozen=True)
class TooLarge:
    """The document is larger than the limit (given, in bytes)."""

    limit: int


@dataclass(frozen=True)
class InvalidJson:
    """The document is not JSON the host stores; the reason is given."""

    message: str


@dataclass(frozen=True)
class InvalidName:
    """The collection or key is empty or too long."""

    message: str


WriteRefusal = Union[TooLarge, InvalidJson, InvalidName]

NAME_MESSAGE = f"collection must be 1-{MAX_COLLECTION_BYTES} bytes and key 1-{MAX_KEY_BYTES} bytes"


def _utf8_length(text: str) -> Optional[int]:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None  # a lone surrogate: not text the host can receive


def check_name(collection: str, key: str) -> Optional[WriteRefusal]:
    """Checks a collection name and key: each 1 to its limit in bytes."""

    def fits(name: str, limit: int) -> bool:
        length = _utf8_length(name)
        return length is not None and 1 <= length <= limit

    if fits(collection, MAX_COLLECTION_BYTES) and fits(key, MAX_KEY_BYTES):
        return None
    return InvalidName(NAME_MESSAGE)


#: Integers at least this large are beyond a 64-bit float, which the host's JSON reader refuses.
_FLOAT_LIMIT = 2**1024


def to_json(value: object) -> Union[str, WriteRefusal]:
    """The JSON text of a value, or why the host could not store it: NaN,
    infinities, integers beyond a 64-bit float, objects JSON cannot hold,
    cycles, or a lone surrogate (such a string cannot even reach the host)."""
    try:
        # Not ASCII-escaped: a lone surrogate stays one and fails the UTF-8 check.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"), default=_refuse)
    except (TypeError, ValueError, RecursionError) as e:
        return InvalidJson(f"cannot be written as JSON: {e}")
    if _utf8_length(text) is None:
        return InvalidJson("a string holds a lone surrogate")
    if _has_huge_int(value):
        return InvalidJson("a number is beyond the range of a 64-bit float")
    return text


def _refuse(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _has_huge_int(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if abs(item) >= _FLOAT_LIMIT:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def check_document(text: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Optional[WriteRefusal]:
    """Checks a document's JSON text (from `to_json`) as the host does: at
    most `max_bytes`, nested at most 128 deep."""
    length = _utf8_length(text) or 0
    if length > max_bytes:
        return TooLarge(max_bytes)
    if _depth(text) > MAX_DEPTH:
        return InvalidJson(f"arrays and objects nest deeper than {MAX_DEPTH}")
    return None


def check_put(collection: str, key: str, text: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Optional[WriteRefusal]:
    """Checks a whole `put`, in the host's order: the name, then the document."""
    return check_name(collection, key) or check_document(text, max_bytes)


def _depth(text: str) -> int:
    deepest = current = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            current += 1
            deepest = max(deepest, current)
        elif c in "]}":
            current -= 1
    return deepest
