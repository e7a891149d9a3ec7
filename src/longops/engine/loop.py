"""One protocol for every background component, and the runner that drives them.

A component does one bounded unit of work per call of :meth:`Loop.run_once` and says how long to
wait before the next one. The runner owns cadence, error isolation and shutdown: a failing cycle is
logged and retried after a backoff that doubles with each failure in a row (up to
``max_backoff_seconds``), so a database that refuses writes is not hammered once a second, and
``stop()`` lets the cycle in flight finish (cancelling it only after its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from longops.engine.backoff import exponential

log = logging.getLogger(__name__)


class Loop(Protocol):
    name: str

    async def run_once(self) -> float:
        """Do one cycle of work; return the seconds to wait before the next cycle."""
        ...


class LoopRunner:
    def __init__(
        self, loops: list[Loop], *, error_backoff_seconds: float = 1.0, max_backoff_seconds: float = 60.0
    ) -> None:
        self._loops = loops
        self._error_backoff = error_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self._drive(loop), name=f"longops-{loop.name}") for loop in self._loops
        ]

    def wake(self) -> None:
        """Run every loop's next cycle now (e.g. a batch was just created)."""
        self._wake.set()

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the cycles in flight and stop; cancel what is still running after ``timeout``."""
        self._stop.set()
        self._wake.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def stopped_loops(self) -> list[str]:
        """The loops whose task has ended although the runner was not stopped."""
        if self._stop.is_set():
            return []
        return [loop.name for loop, task in zip(self._loops, self._tasks, strict=True) if task.done()]

    async def _drive(self, loop: Loop) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                delay = await loop.run_once()
                failures = 0
            except Exception as exc:
                failures += 1
                delay = exponential(failures, base=self._error_backoff, cap=self._max_backoff)
                log.error(
                    "%s cycle failed (%d in a row); retrying in %.1fs",
                    loop.name,
                    failures,
                    delay,
                    exc_info=exc,
                )
            await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        if self._stop.is_set():
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))
