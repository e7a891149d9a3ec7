"""Process entry points behind ``longops serve`` and ``longops engine``."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import signal
import socket
from collections.abc import Callable

import uvicorn

from longops.api.app import create_app
from longops.api.auth import DEFAULT_ORG, is_loopback_host
from longops.domain.prices import PriceError
from longops.engine.engine import Engine
from longops.engine.leadership import EngineSlotError, SQLiteLeadership
from longops.engine.metrics import Metrics
from longops.handlers import HandlerLoadError
from longops.settings import Settings
from longops.store.api_keys import any_key_exists
from longops.store.db import open_database, sqlite_path
from longops.store.migrate import upgrade_database

log = logging.getLogger("longops")


class StartupError(RuntimeError):
    """The process cannot start; the message says why (printed as one line, exit non-zero)."""


def fast_paths() -> tuple[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools when installed (as uvicorn's ``auto``
    would choose), named here so the log says which. Each roughly halves the per-request cost of its
    layer; the standard-library loop and h11 remain the fallback (e.g. on Windows, or PyPy)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return loop, http


def freeze_startup_objects() -> None:
    """Move everything alive after startup (modules, classes, the app, the engine) out of the garbage
    collector's reach: a full collection otherwise walks those ~250,000 objects, a pause of 100 ms or
    more on a small machine that lands on whichever requests are in flight (the API's p99)."""
    gc.collect()
    gc.freeze()


def engine_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop of ``longops engine``: uvloop when installed, as for ``serve``."""
    if fast_paths()[0] != "uvloop":
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module("uvloop").new_event_loop
    return factory


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the lifespan (database, engine) has started
        freeze_startup_objects()


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(
    settings: Settings, *, host: str | None = None, port: int | None = None, run_engine: bool = True
) -> None:
    """Run the API (and the engine unless ``run_engine`` is False) until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    host = host or settings.host
    port = port if port is not None else settings.port
    settings = settings.model_copy(update={"host": host, "port": port})  # the app decides open mode by it
    try:  # first: a bad handlers setting or prices file is reported before the database is touched
        app = create_app(settings, run_engine=run_engine)
    except (HandlerLoadError, PriceError) as exc:
        raise StartupError(str(exc)) from exc
    _check_access(settings)
    if run_engine:
        _check_engine_slot(settings)
    loop, http = fast_paths()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        loop=loop,
        http=http,
        access_log=False,  # the app writes its own access line (api.access_log), when ACCESS_LOG is on
    )
    # One process per instance: the engine's leadership, workers and metrics are per process, so scale
    # out with more `longops serve` instances (PostgreSQL), not uvicorn --workers.
    server = _Server(config)
    log.info(
        "longops serving on http://%s:%d (engine: %s; %s, %s)",
        host,
        port,
        "on" if run_engine else "off",
        loop,
        http,
    )
    try:
        server.run()
    except EngineSlotError as exc:
        raise StartupError(str(exc)) from exc
    if server.started is False and not server.should_exit:
        raise StartupError("the server did not start; see the log above")


def _check_engine_slot(settings: Settings) -> None:
    """On SQLite, say in one line, before anything listens, that another engine holds the file.

    The engine takes the guard for real when it starts; this early probe only turns the common
    mistake into a clear message instead of a failed application startup.
    """
    path = sqlite_path(settings.database_url)
    if path is None:
        return
    probe = SQLiteLeadership(path)
    try:
        asyncio.run(probe.try_acquire())
    except EngineSlotError as exc:
        raise StartupError(str(exc)) from exc
    asyncio.run(probe.release())


def _check_access(settings: Settings) -> None:
    """Refuse to listen on a non-loopback address without an active API key; say loudly when open.

    Runs before anything listens (it migrates the database first, as ``longops keys`` does).
    """
    try:
        any_key, active_key = asyncio.run(_key_status(settings.database_url))
    except Exception as exc:
        raise StartupError(
            f"cannot read the API keys from the database: {type(exc).__name__}: {exc}"
        ) from exc
    if active_key:
        return
    if not is_loopback_host(settings.host):
        raise StartupError(
            f"refusing to listen on {settings.host}: it is not a loopback address and there is no active API "
            "key, so the API would be open to anyone who can reach it; an API key is needed: create one with "
            "`longops keys create --org NAME` (or listen on 127.0.0.1)"
        )
    if any_key:
        log.warning(
            "every API key is revoked: all requests will get 401 until `longops keys create --org NAME`"
        )
    else:
        log.warning(
            "OPEN MODE: no API key exists, so requests without a key are accepted as organization %r "
            "(allowed only because %s is a loopback address). Create a key with "
            "`longops keys create --org NAME` to require keys.",
            DEFAULT_ORG,
            settings.host,
        )


async def _key_status(database_url: str) -> tuple[bool, bool]:
    """(any key was ever created, an unrevoked key exists)."""
    db = open_database(database_url)
    try:
        await upgrade_database(db)
        return await any_key_exists(db), await any_key_exists(db, active_only=True)
    finally:
        await db.dispose()


def run_engine(settings: Settings) -> None:
    """Run the engine without the API until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    try:
        with asyncio.Runner(loop_factory=engine_loop_factory()) as runner:
            runner.run(_engine_main(settings))
    except (EngineSlotError, HandlerLoadError, PriceError) as exc:
        raise StartupError(str(exc)) from exc


async def _engine_main(settings: Settings) -> None:
    db = open_database(settings.database_url)
    await upgrade_database(db)
    engine = Engine(settings, db, Metrics())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await engine.start()
    freeze_startup_objects()
    log.info("longops engine running (no API)")
    try:
        await stop.wait()
    finally:
        log.info("stopping engine: finishing the work in flight")
        await engine.stop()
        await db.dispose()
