"""A projection must give the same documents for the same events. Inside a
module the clock and random numbers are WASI stubs, so code that reads them
would be wrong without a sign: while a projection runs, the usual ways to
read them raise instead (`time.time()` and friends, the `random` module's
functions, `os.urandom`). `datetime.now()` is C code that cannot be
replaced; use `event.created_ms`."""

from __future__ import annotations

import os
import random
import time
from typing import Callable, List, Tuple

_MESSAGE = "is not available in a projection: it must give the same documents for the same events (use event.created_ms for time)"

_CLOCKS = ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns")
_RANDOM = ("random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform", "getrandbits")


def _refusing(what: str) -> Callable[..., object]:
    def refuse(*args: object, **kwargs: object) -> object:
        raise RuntimeError(f"{what} {_MESSAGE}")

    return refuse


def forbid_clock_and_randomness() -> Callable[[], None]:
    """Replaces the clock and randomness with functions that raise; returns how to put them back."""
    saved: List[Tuple[object, str, object]] = []
    for module, names, prefix in ((time, _CLOCKS, "time"), (random, _RANDOM, "random"), (os, ("urandom",), "os")):
        for name in names:
            if hasattr(module, name):
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, _refusing(f"{prefix}.{name}()"))

    def restore() -> None:
        for module, name, original in saved:
            setattr(module, name, original)

    return restore
