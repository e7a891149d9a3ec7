"""The engine of one process: leadership, and the leader-only loops while it leads.

A standby tries to become leader every ``LEADER_RETRY_SECONDS`` (with jitter). A leader checks its
leadership before every cycle of its loops is allowed to continue (at most every second); on loss it
stops the leader-only loops at once, and only then tries to lead again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from longops.engine.emulated import EmulatedSender
from longops.engine.leadership import Leadership, PostgresLeadership, SQLiteLeadership
from longops.engine.loop import Loop, LoopRunner
from longops.engine.metrics import Metrics
from longops.engine.poller import Poller
from longops.engine.retention import Pruner
from longops.engine.submitter import Submitter
from longops.engine.webhooks import WebhookDispatcher
from longops.engine.workers import Workers, bound_handlers
from longops.handlers import load_handlers
from longops.providers.registry import ProviderRegistry, build_registry, configured_providers
from longops.settings import Settings
from longops.store.db import Database, sqlite_path
from longops.store.terms import begin_term, end_term, term_fence
from longops.store.types import utcnow

log = logging.getLogger(__name__)

LEADER_CHECK_SECONDS = 1.0


def make_leadership(settings: Settings, db: Database) -> Leadership:
    path = sqlite_path(settings.database_url)
    if db.is_sqlite:
        if path is None:
            raise ValueError("the engine needs a SQLite file, not an in-memory database")
        return SQLiteLeadership(path)
    return PostgresLeadership(
        settings.leader_database_url or settings.database_url, settings.leader_lock_name
    )


class Engine:
    def __init__(self, settings: Settings, db: Database, metrics: Metrics) -> None:
        self._settings = settings
        self._db = db
        self._metrics = metrics
        self._leadership = make_leadership(settings, db)
        self._registry: ProviderRegistry | None = None
        self._runner: LoopRunner | None = None
        self._shared_runner: LoopRunner | None = None
        self._workers: Workers | None = None
        self._senders: list[EmulatedSender] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stack = AsyncExitStack()
        self.is_leader = False
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._term: int | None = None

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "standby"

    async def start(self) -> None:
        """Start; on SQLite, take the one-engine guard first (raises an EngineSlotError)."""
        load_handlers(self._settings.handlers)
        options = self._settings.provider_options()
        specs = configured_providers(options)  # a bad providers file stops here, before anything runs
        if self._db.is_sqlite:
            await self._leadership.try_acquire()
        simulator_url = self._settings.simulator_url
        if simulator_url is None:
            from longops.providers.simulator.server import start_embedded

            simulator_url = await self._stack.enter_async_context(
                start_embedded(
                    processing_seconds=self._settings.simulator_processing_seconds,
                    error_rate=self._settings.simulator_error_rate,
                    state_dir=self._settings.simulator_state_dir,
                )
            )
            log.info("bundled simulator provider listening at %s", simulator_url)
        self._registry = build_registry(specs, options, simulator_url)
        handlers = bound_handlers(self._db, self._settings, specs)
        self._workers = Workers(self._db, self._settings, handlers, owner=self.instance)
        self._senders = [
            EmulatedSender(self._db, self._settings, spec)
            for spec in specs.values()
            if spec.batch == "emulated"
        ]
        self._shared_runner = LoopRunner(self.shared_loops())
        self._shared_runner.start()
        self._task = asyncio.create_task(self._lead(), name="longops-leadership")

    def wake(self) -> None:
        for runner in (self._runner, self._shared_runner):
            if runner is not None:
                runner.wake()
        if self._workers is not None:
            self._workers.wake()
        for sender in self._senders:
            sender.wake()

    async def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
        await self._step_down(timeout)
        if self._workers is not None:
            await self._workers.drain(self._settings.worker_shutdown_grace_seconds)
        if self._shared_runner is not None:
            await self._shared_runner.stop(timeout)
        for sender in self._senders:
            await sender.drain(self._settings.worker_shutdown_grace_seconds)
        await self._leadership.release()
        if self._registry is not None:
            await self._registry.aclose()
        await self._stack.aclose()

    def leader_loops(self, db: Database) -> list[Loop]:
        """Loops only the leader runs, on a database view fenced by its term."""
        assert self._registry is not None
        return [
            Submitter(db, self._registry, self._settings, self._metrics),
            Poller(db, self._registry, self._settings, self._metrics),
            Pruner(db, self._settings),
        ]

    def shared_loops(self) -> list[Loop]:
        """Loops that run on every instance, leader or not (emulated batches too: their senders)."""
        assert self._workers is not None
        return [WebhookDispatcher(self._db, self._settings), self._workers, *self._senders]

    async def _lead(self) -> None:
        while not self._stopping.is_set():
            if not self.is_leader:
                try:
                    acquired = await self._leadership.try_acquire()
                except Exception as exc:  # database down: stay standby and retry
                    log.warning("leader election failed: %s", exc)
                    acquired = False
                if acquired:
                    await self._become_leader()
                else:
                    await self._pause(self._settings.leader_retry_seconds * random.uniform(0.8, 1.2))
                    continue
            if not await self._leadership.still_leader():
                log.error("leadership lost: stopping leader-only loops")
                await self._step_down(timeout=0)
                # Let a healthy standby take over before this instance, whose connection just failed.
                await self._pause(self._settings.leader_retry_seconds * random.uniform(1.0, 1.5))
                continue
            await self._pause(LEADER_CHECK_SECONDS)

    async def _become_leader(self) -> None:
        self._term = await begin_term(self._db, self._settings.leader_lock_name, self.instance, utcnow())
        log.info("this instance (%s) is now the leader, term %d", self.instance, self._term)
        self.is_leader = True
        self._metrics.leader.set(1)
        self._runner = LoopRunner(self.leader_loops(self._db.fenced(term_fence(self._term))))
        self._runner.start()

    async def _step_down(self, timeout: float) -> None:
        runner, self._runner = self._runner, None
        term, self._term = self._term, None
        self.is_leader = False
        self._metrics.leader.set(0)
        if runner is not None:
            await runner.stop(timeout)
        if term is not None:
            try:
                await end_term(self._db, term, utcnow())
            except Exception as exc:  # database unreachable: the next leader closes the term
                log.warning("could not record the end of term %d: %s", term, exc)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


@contextlib.asynccontextmanager
async def running_engine(settings: Settings, db: Database, metrics: Metrics) -> AsyncIterator[Engine]:
    engine = Engine(settings, db, metrics)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
