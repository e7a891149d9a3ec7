"""One protocol for every background component, and the runner that drives them.

A component does one bounded unit of work per call of :meth:`Loop.run_once` and says how long to
wait before the next one. The runner owns cadence, error isolation and shutdown: a failing cycle is
logged and retried after a backoff, and ``stop()`` lets the cycle in flight finish (it is never
cancelled mid-chunk), so a SIGTERM leaves no half-applied work behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Loop(Protocol):
    name: str

    async def run_once(self) -> float:
        """Do one cycle of work; return the seconds to wait before the next cycle."""
        ...


class LoopRunner:
    def __init__(self, loops: list[Loop], *, error_backoff_seconds: float = 1.0) -> None:
        self._loops = loops
        self._error_backoff = error_backoff_seconds
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

    async def _drive(self, loop: Loop) -> None:
        while not self._stop.is_set():
            try:
                delay = await loop.run_once()
            except Exception:
                log.exception("%s cycle failed; retrying in %.1fs", loop.name, self._error_backoff)
                delay = self._error_backoff
            await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        if self._stop.is_set():
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))
