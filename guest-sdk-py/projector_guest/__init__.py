"""Write Projector projections in Python: events in, JSON documents out,
tested with pytest through `projector_guest.testing.Harness`, built into a
WebAssembly component with `python -m projector_guest.build`."""

from . import log, rules
from .errors import InvalidEvent, ReadModelError
from .event import Event, EventType, event_type
from .model import ReadModel
from .projection import Projection

__all__ = ["Event", "EventType", "InvalidEvent", "Projection", "ReadModel", "ReadModelError", "event_type", "log", "rules"]
