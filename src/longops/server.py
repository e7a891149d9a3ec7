"""Process entry points behind ``longops serve`` and ``longops engine``."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn

from longops.api.app import create_app
from longops.api.auth import DEFAULT_ORG, is_loopback_host
from longops.api.header_limit import bounded_httptools
from longops.domain.prices import PriceError
from longops.engine.engine import Engine
from longops.engine.leadership import EngineSlotError, SQLiteLeadership
from longops.engine.metrics import Metrics
from longops.handlers import HandlerLoadError, load_handlers
from longops.providers.config import ProvidersFileError
from longops.settings import Settings
from longops.store.api_keys import any_key_exists
from longops.store.connect import OPEN_ERRORS, DatabaseUnavailable, open_upgraded, shown_url, unavailable
from longops.store.db import sqlite_path

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
    """Says "serving on …" once the app has started and the socket accepts connections, not before."""

    def __init__(self, config: uvicorn.Config, announcement: str) -> None:
        super().__init__(config)
        self._announcement = announcement

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the lifespan (database, engine) has started, the socket listens
        if not self.should_exit:
            log.info("%s", self._announcement)
            freeze_startup_objects()

    def _log_started_message(self, listeners: Sequence[socket.SocketType]) -> None:
        """Ours replaces uvicorn's "running on socket …" line (which would name a file descriptor)."""


def _not_alembic_boilerplate(record: logging.LogRecord) -> bool:
    """Alembic's two set-up lines repeat at every migration check and say nothing to a reader; the
    lines of migrations actually run stay."""
    return not record.getMessage().startswith(("Context impl ", "Will assume "))


def configure_logging(level: str) -> None:
    """One format for our loggers and uvicorn's, each line written once (uvicorn's own logging
    configuration is not installed: it would add handlers beside the root's)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.migration").addFilter(_not_alembic_boilerplate)


def serve(
    settings: Settings, *, host: str | None = None, port: int | None = None, run_engine: bool = True
) -> None:
    """Run the API (and the engine unless ``run_engine`` is False) until SIGINT/SIGTERM.

    Everything a user can get wrong is checked before a database file is created or a port is taken,
    each failure one :class:`StartupError` line: the handler modules, the directories it writes, the
    database, the API keys, the SQLite engine lock, the bundled simulator's port, then the port.
    """
    configure_logging(settings.log_level)
    host = host or settings.host
    port = port if port is not None else settings.port
    settings = settings.model_copy(update={"host": host, "port": port})  # the app decides open mode by it
    try:  # first: a bad handlers setting, providers file or prices file is reported before the database
        app = create_app(settings, run_engine=run_engine)
    except (HandlerLoadError, ProvidersFileError, PriceError) as exc:
        raise StartupError(str(exc)) from exc
    check_directories(settings, engine=run_engine)
    _check_access(settings)
    log_database(settings)
    if run_engine:
        _check_engine_slot(settings)
        check_simulator_port(settings)
    sock = _listening_socket(host, port)
    loop, http = fast_paths()
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=settings.log_level.lower(),
        lifespan="on",
        loop=loop,
        # A request's head is bounded before it is parsed whole (api.header_limit): HTTP 431.
        http=bounded_httptools(settings.max_header_bytes, settings.max_headers)
        if http == "httptools"
        else http,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        access_log=False,  # the app writes its own access line (api.access_log), when ACCESS_LOG is on
    )
    # One process per instance: the engine's leadership, workers and metrics are per process, so scale
    # out with more `longops serve` instances (PostgreSQL), not uvicorn --workers.
    where = f"[{host}]" if ":" in host else host
    server = _Server(
        config,
        f"longops serving on http://{where}:{sock.getsockname()[1]} "
        f"(engine: {'on' if run_engine else 'off'}; {loop}, {http})",
    )
    try:
        server.run(sockets=[sock])
    except EngineSlotError as exc:
        raise StartupError(str(exc)) from exc
    finally:
        sock.close()
    if server.started is False and not server.should_exit:
        raise StartupError("the server did not start; see the log above")


def _listening_socket(host: str, port: int) -> socket.socket:
    """The socket ``serve`` listens on, bound here so that a port in use is one line, not uvicorn's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop the process using it, or choose "
            "another port with --port (LONGOPS_PORT) and --host (LONGOPS_HOST)"
        ) from exc
    return sock


def check_simulator_port(settings: Settings) -> None:
    """A fixed port for the bundled simulator (LONGOPS_SIMULATOR_PORT) must be free before starting."""
    if settings.simulator_url is not None or settings.simulator_port == 0:
        return
    try:
        socket.create_server(("127.0.0.1", settings.simulator_port)).close()
    except OSError as exc:
        raise StartupError(
            f"LONGOPS_SIMULATOR_PORT={settings.simulator_port}: the bundled simulator cannot listen on "
            f"127.0.0.1:{settings.simulator_port}: {exc.strerror or exc}; choose another port, or 0 for "
            "any free one"
        ) from exc


def check_directories(settings: Settings, *, engine: bool) -> None:
    """The directories this process will write, checked before anything starts: each must be, or be
    creatable inside, a writable directory. Nothing is created here."""
    wanted = [("FILES_DIR", settings.files_dir)]
    if engine and settings.simulator_url is None:
        wanted.append(("SIMULATOR_STATE_DIR", settings.simulator_state_dir))
    for name, value in wanted:
        path = Path(value).resolve()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise StartupError(
                f"LONGOPS_{name}={value}: {existing} is not a writable directory; "
                f"set LONGOPS_{name} to a directory this process may write"
            )


def log_database(settings: Settings) -> None:
    """Say which database this process uses: a SQLite file by its absolute path."""
    path = sqlite_path(settings.database_url)
    if path is not None:
        log.info("database: SQLite file %s", path)
    else:
        log.info("database: %s", shown_url(settings.database_url))


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
    except DatabaseUnavailable as exc:
        raise StartupError(str(exc)) from exc
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
    db = await open_upgraded(database_url)
    try:
        return await any_key_exists(db), await any_key_exists(db, active_only=True)
    except OPEN_ERRORS as exc:
        raise unavailable(exc, database_url) from exc
    finally:
        await db.dispose()


def run_engine(settings: Settings) -> None:
    """Run the engine without the API until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    try:
        load_handlers(settings.handlers)  # before the database is opened (or a SQLite file created)
        check_directories(settings, engine=True)
        check_simulator_port(settings)
        with asyncio.Runner(loop_factory=engine_loop_factory()) as runner:
            runner.run(_engine_main(settings))
    except (EngineSlotError, HandlerLoadError, ProvidersFileError, PriceError, DatabaseUnavailable) as exc:
        raise StartupError(str(exc)) from exc


async def _engine_main(settings: Settings) -> None:
    db = await open_upgraded(settings.database_url)
    log_database(settings)
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
