"""The glue between the WIT world (`wit/projection.wit`) and a `Projection`,
for a module built with componentize-py. Only a module's build entry
imports this file (its `wit_world` bindings exist only inside the build);
tests use the harness instead."""

from __future__ import annotations

from typing import Optional, Type

import wit_world
from componentize_py_types import Err
from wit_world.imports import log as wit_log
from wit_world.imports import read_model, types

from . import log
from .determinism import forbid_clock_and_randomness
from .errors import to_handle_error
from .event import Event
from .model import ReadModel
from .projection import Projection
from .rules import InvalidJson, InvalidName, TooLarge, WriteRefusal

_LEVELS = {"debug": wit_log.Level.DEBUG, "info": wit_log.Level.INFO, "warn": wit_log.Level.WARN, "error": wit_log.Level.ERROR}


class _Host:
    """The host's read model, through the imports."""

    def get(self, collection: str, key: str) -> Optional[str]:
        return read_model.get(collection, key)

    def put(self, collection: str, key: str, text: str) -> Optional[WriteRefusal]:
        try:
            read_model.put(collection, key, text)
            return None
        except Err as refused:  # the WIT result's error
            error = refused.value
            if isinstance(error, read_model.WriteError_TooLarge):
                return TooLarge(error.value)
            if isinstance(error, read_model.WriteError_InvalidJson):
                return InvalidJson(error.value)
            return InvalidName(error.value)

    def delete(self, collection: str, key: str) -> None:
        read_model.delete(collection, key)


def _handle_error(kind: str, message: str) -> types.HandleError:
    if kind == "invalid-event":
        return types.HandleError_InvalidEvent(message)
    if kind == "read-model":
        return types.HandleError_ReadModel(message)
    return types.HandleError_Other(message)


def world_for(projection: Type[Projection]) -> type:
    """The module's exports (the `WitWorld` class componentize-py looks for) for `projection`."""
    log.set_writer(lambda level, message: wit_log.write(_LEVELS[level], message))
    forbid_clock_and_randomness()
    instance = projection()
    model = ReadModel(_Host())

    class WitWorld(wit_world.WitWorld):
        def describe(self) -> types.Description:
            return types.Description(
                name=projection.name,
                version=projection.version,
                event_types=list(projection.event_types),
                event_type_prefixes=list(projection.event_type_prefixes),
                stream_prefixes=list(projection.streams),
                indexes=[types.Index(collection=c, field=f) for c, f in projection.indexes],
            )

        def handle_batch(self, events: list) -> None:
            for index, e in enumerate(events):
                event = Event(
                    stream_id=e.stream_id,
                    event_type=e.event_type,
                    event_id=e.event_id,
                    stream_revision=e.stream_revision,
                    commit_position=e.commit_position,
                    created_ms=e.created_ms,
                    content_type=e.content_type,
                    data=bytes(e.data),
                    metadata=bytes(e.metadata),
                )
                try:
                    instance.apply(event, model)
                except Exception as error:  # every failure, in its own words, never a bare trap
                    kind, message = to_handle_error(error)
                    raise Err(types.BatchError(event_index=index, error=_handle_error(kind, message)))

    return WitWorld
