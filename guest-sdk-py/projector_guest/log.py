"""Log lines from a projection, shown by the host under its name."""

from __future__ import annotations

from typing import Callable

Writer = Callable[[str, str], None]

_writer: Writer = lambda level, message: None


def set_writer(writer: Writer) -> Writer:
    """Where lines go (the host in a module, the harness's list in tests); returns the previous one."""
    global _writer
    previous, _writer = _writer, writer
    return previous


def debug(message: str) -> None:
    _writer("debug", message)


def info(message: str) -> None:
    _writer("info", message)


def warn(message: str) -> None:
    _writer("warn", message)


def error(message: str) -> None:
    _writer("error", message)
