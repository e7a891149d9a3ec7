"""The engine of one process: leadership, and the leader-only loops while it leads.

A standby tries to become leader every ``LEADER_RETRY_SECONDS`` (with jitter). A leader checks its
leadership before every cycle of its loops is allowed to continue (at most every second); on loss it
stops the leader-only loops at once, and only then tries to lead again.

Any failure of a leadership cycle (the term start refused, the lock connection cut) is survived:
the leader-only loops stop, the lock connection is closed (so another instance can lead), and the
cycle is retried at an exponential backoff. :meth:`Engine.problem` says, for ``/readyz``, when a
task that should run does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from contextlib import AsyncExitStack

from longops.domain.clock import Clock, system_clock
from longops.domain.prices import PriceTable
from longops.engine.backoff import exponential
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
from longops.pricing import load_price_table
from longops.providers.registry import ProviderRegistry, build_registry, configured_providers
from longops.settings import Settings
from longops.store.db import Database, sqlite_path
from longops.store.terms import begin_term, end_term, term_fence

log = logging.getLogger(__name__)

LEADER_CHECK_SECONDS = 1.0
LEADER_MAX_BACKOFF_SECONDS = 60.0


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
    def __init__(
        self,
        settings: Settings,
        db: Database,
        metrics: Metrics,
        prices: PriceTable | None = None,
        *,
        clock: Clock = system_clock,
    ) -> None:
        """``clock`` is the time of the terms, the workers and the webhook dispatcher; ``prices``
        prices usage (the table of ``settings`` by default)."""
        self._settings = settings
        self._clock = clock
        self._db = db
        self._metrics = metrics
        self._prices = prices if prices is not None else load_price_table(settings)
        self._leadership = make_leadership(settings, db)
        self._registry: ProviderRegistry | None = None
        self._runner: LoopRunner | None = None
        self._shared_runner: LoopRunner | None = None
        self._workers: Workers | None = None
        self._webhooks: WebhookDispatcher | None = None
        self._senders: list[EmulatedSender] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stack = AsyncExitStack()
        self.is_leader = False
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._term: int | None = None
        self._said_standby = False

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
                    port=self._settings.simulator_port,
                )
            )
            log.info("bundled simulator provider listening at %s", simulator_url)
        self._registry = build_registry(specs, options, simulator_url)
        handlers = bound_handlers(self._db, self._settings, specs)
        self._workers = Workers(self._db, self._settings, handlers, owner=self.instance, clock=self._clock)
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
        if self._webhooks is not None:
            await self._webhooks.aclose()
        await self._leadership.release()
        if self._registry is not None:
            await self._registry.aclose()
        await self._stack.aclose()

    def leader_loops(self, db: Database) -> list[Loop]:
        """Loops only the leader runs, on a database view fenced by its term."""
        assert self._registry is not None
        return [
            Submitter(db, self._registry, self._settings, self._metrics),
            Poller(db, self._registry, self._settings, self._metrics, self._prices),
            Pruner(db, self._settings, clock=self._clock),
        ]

    def shared_loops(self) -> list[Loop]:
        """Loops that run on every instance, leader or not (emulated batches too: their senders)."""
        assert self._workers is not None
        if self._webhooks is None:
            self._webhooks = WebhookDispatcher(
                self._db, self._settings, clock=self._clock, prices=self._prices
            )
        return [self._webhooks, self._workers, *self._senders]

    async def _lead(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._lead_once()
                failures = 0
            except Exception as exc:  # any failure of a cycle: stand down cleanly, back off, retry
                failures += 1
                log.exception("leadership cycle failed (%s); standing down and retrying", type(exc).__name__)
                await self._step_down(timeout=0)
                if not self._db.is_sqlite:  # a lock connection in an unknown state: closed, taken anew
                    with contextlib.suppress(Exception):
                        await self._leadership.release()
                await self._pause(
                    exponential(
                        failures, base=self._settings.leader_retry_seconds, cap=LEADER_MAX_BACKOFF_SECONDS
                    )
                )

    async def _lead_once(self) -> None:
        if not self.is_leader:
            try:
                acquired = await self._leadership.try_acquire()
            except Exception as exc:  # database down: stay standby and retry
                log.warning(
                    "leader election failed (%s); this instance stays standby and tries again in "
                    "about %g s (LONGOPS_LEADER_RETRY_SECONDS)",
                    exc,
                    self._settings.leader_retry_seconds,
                )
                acquired = False
            if acquired:
                await self._become_leader()
            else:
                if not self._said_standby:
                    self._said_standby = True  # said once per stretch as standby, not every retry
                    log.info(
                        "this instance (%s) is standby: another instance leads (lock %r); it tries "
                        "to take over every %g s (LONGOPS_LEADER_RETRY_SECONDS)",
                        self.instance,
                        self._settings.leader_lock_name,
                        self._settings.leader_retry_seconds,
                    )
                await self._pause(self._settings.leader_retry_seconds * random.uniform(0.8, 1.2))
                return
        if not await self._leadership.still_leader():
            log.error("leadership lost: stopping leader-only loops")
            await self._step_down(timeout=0)
            # Let a healthy standby take over before this instance, whose connection just failed.
            await self._pause(self._settings.leader_retry_seconds * random.uniform(1.0, 1.5))
            return
        await self._pause(LEADER_CHECK_SECONDS)

    def problem(self) -> str | None:
        """Why this engine is not running its loops (for ``/readyz``), or None when it is."""
        if self._stopping.is_set():
            return "the engine is stopping"
        if self._task is None:
            return "the engine has not started"
        if self._task.done():
            return "the leadership task has stopped; see the log and restart the process"
        for runner in (self._shared_runner, self._runner):
            stopped = runner.stopped_loops() if runner is not None else []
            if stopped:
                return (
                    f"background loop(s) stopped: {', '.join(stopped)}; see the log and restart the process"
                )
        return None

    async def _become_leader(self) -> None:
        self._term = await begin_term(self._db, self._settings.leader_lock_name, self.instance, self._clock())
        log.info("this instance (%s) is now the leader, term %d", self.instance, self._term)
        self._said_standby = False
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
                await end_term(self._db, term, self._clock())
            except Exception as exc:  # database unreachable: the next leader closes the term
                log.warning("could not record the end of term %d: %s", term, exc)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
