"""The one clock every time-dependent component reads, injectable so tests move time instead of racing it.

A :class:`Clock` is a zero-argument callable returning the current time as an aware UTC datetime.
Components take one as a constructor argument, :func:`system_clock` by default; a test hands them a
:class:`ManualClock` and calls :meth:`ManualClock.advance` where it would otherwise wait for a lease or
a backoff to run out.

Invariants: every reading is timezone-aware UTC; a :class:`ManualClock` changes only when it is told
to and never goes backwards. Reading a clock is not I/O, so this module stays in ``domain``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def system_clock() -> datetime:
    """The machine's time, now, in UTC."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until :meth:`advance` moves it (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("ManualClock needs an aware start time (e.g. datetime.now(UTC))")
        self._now = system_clock() if start is None else start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` forward; returns the new time."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward: advance({seconds}) is negative")
        self._now += timedelta(seconds=seconds)
        return self._now
