"""Process entry points behind ``longops serve`` and ``longops engine``."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn

from longops.api.app import create_app
from longops.engine.engine import Engine
from longops.engine.leadership import EngineAlreadyRunning
from longops.engine.metrics import Metrics
from longops.settings import Settings
from longops.store.db import open_database
from longops.store.migrate import upgrade_database

log = logging.getLogger("longops")


class StartupError(RuntimeError):
    """The process cannot start; the message says why (printed as one line, exit non-zero)."""


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(
    settings: Settings, *, host: str | None = None, port: int | None = None, run_engine: bool = True
) -> None:
    """Run the API (and the engine unless ``run_engine`` is False) until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    host = host or settings.host
    port = port if port is not None else settings.port
    app = create_app(settings, run_engine=run_engine)
    config = uvicorn.Config(app, host=host, port=port, log_level=settings.log_level.lower(), lifespan="on")
    server = uvicorn.Server(config)
    log.info("longops serving on http://%s:%d (engine: %s)", host, port, "on" if run_engine else "off")
    try:
        server.run()
    except EngineAlreadyRunning as exc:
        raise StartupError(str(exc)) from exc
    if server.started is False and not server.should_exit:
        raise StartupError("the server did not start; see the log above")


def run_engine(settings: Settings) -> None:
    """Run the engine without the API until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    try:
        asyncio.run(_engine_main(settings))
    except EngineAlreadyRunning as exc:
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
    log.info("longops engine running (no API)")
    try:
        await stop.wait()
    finally:
        log.info("stopping engine: finishing the work in flight")
        await engine.stop()
        await db.dispose()
