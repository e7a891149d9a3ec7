"""Running the simulator: blocking (``longops simulator``), inside the current event loop, or in a thread.

The embedded variants bind ``127.0.0.1:0`` themselves, so the port is known before the server
starts and never collides, and they stop cleanly on exit (requests still held by a delay fault are
cancelled after one second).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import threading
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from longops.providers.simulator.app import create_app
from longops.providers.simulator.openai_wire import OpenAIState
from longops.providers.simulator.state import DAY_SECONDS, SimConfig, SimulatorState


def build_app(
    *,
    processing_seconds: float,
    error_rate: float,
    state_dir: str | None,
    cancel_seconds: float,
    expiry_seconds: float = DAY_SECONDS,
) -> Starlette:
    config = SimConfig(
        processing_seconds=processing_seconds,
        cancel_seconds=cancel_seconds,
        error_rate=error_rate,
        expiry_seconds=expiry_seconds,
    )
    openai_dir = Path(state_dir) / "openai" if state_dir is not None else None
    return create_app(SimulatorState(config, state_dir=state_dir), OpenAIState(config, state_dir=openai_dir))


def run(
    host: str,
    port: int,
    *,
    processing_seconds: float,
    error_rate: float,
    state_dir: str | None,
    cancel_seconds: float = 1.0,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM). A port that cannot be taken raises ``OSError``
    before anything starts (bound here rather than by uvicorn, which would log and exit)."""
    app = build_app(
        processing_seconds=processing_seconds,
        error_rate=error_rate,
        state_dir=state_dir,
        cancel_seconds=cancel_seconds,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, port), family=family) as sock:
        uvicorn.Server(uvicorn.Config(app)).run(sockets=[sock])


_embedded_task = contextvars.ContextVar("longops_embedded_simulator", default=False)


def _not_from_embedded(record: logging.LogRecord) -> bool:
    """uvicorn's lifecycle lines ("Started server process", "Shutting down", …) of an embedded
    simulator would repeat the host server's own, so those below WARNING are dropped."""
    return record.levelno >= logging.WARNING or not _embedded_task.get()


logging.getLogger("uvicorn.error").addFilter(_not_from_embedded)


class _EmbeddedServer(uvicorn.Server):
    """Leaves signal handling to the host program (pytest, the engine); logs only warnings."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        _embedded_task.set(True)  # this task's (or thread's) own context: the host's lines still show
        await super().serve(sockets)


def _embedded(app: Starlette, port: int = 0) -> tuple[_EmbeddedServer, socket.socket, str]:
    sock = socket.create_server(("127.0.0.1", port))
    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_graceful_shutdown=1)
    return _EmbeddedServer(config), sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def start_embedded(
    *,
    processing_seconds: float = 0.0,
    error_rate: float = 0.0,
    state_dir: str | None = None,
    cancel_seconds: float = 0.0,
    expiry_seconds: float = DAY_SECONDS,
    port: int = 0,
) -> AsyncIterator[str]:
    """Serve in the current event loop on ``port`` (0: any free one); yields the base URL
    (``http://127.0.0.1:PORT``). A port in use raises ``OSError`` before anything is served."""
    app = build_app(
        processing_seconds=processing_seconds,
        error_rate=error_rate,
        state_dir=state_dir,
        cancel_seconds=cancel_seconds,
        expiry_seconds=expiry_seconds,
    )
    server, sock, url = _embedded(app, port)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # uvicorn offers no startup event
            if task.done():
                task.result()
                raise RuntimeError("simulator exited during startup")
            await asyncio.sleep(0.005)
        yield url
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.contextmanager
def run_in_thread(
    *,
    processing_seconds: float = 0.0,
    error_rate: float = 0.0,
    state_dir: str | None = None,
    cancel_seconds: float = 0.0,
    expiry_seconds: float = DAY_SECONDS,
) -> Iterator[str]:
    """Serve from a background thread with its own event loop, for synchronous fixtures."""
    app = build_app(
        processing_seconds=processing_seconds,
        error_rate=error_rate,
        state_dir=state_dir,
        cancel_seconds=cancel_seconds,
        expiry_seconds=expiry_seconds,
    )
    server, sock, url = _embedded(app)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)

    thread = threading.Thread(target=serve, name="longops-simulator", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("simulator exited during startup") from (failure[0] if failure else None)
            thread.join(0.005)
        yield url
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
