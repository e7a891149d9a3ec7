"""A loopback webhook receiver answering from a script, and a bounded wait for a condition."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering


@dataclass(frozen=True)
class Hit:
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic() when the request arrived
    status: int  # what the receiver answered (or was about to, for a slow answer)


class Receiver:
    """A loopback webhook receiver: answers in script order, repeating the last answer."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self._answers: list[Answer] = [Answer()]
        self._lock = threading.Lock()
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    answer = receiver._answers.pop(0) if len(receiver._answers) > 1 else receiver._answers[0]
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.hits.append(Hit(headers, body, time.monotonic(), answer.status))
                if answer.delay and receiver._closing.wait(answer.delay):
                    return
                try:
                    self.send_response(answer.status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up (timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self._answers = list(answers)

    def statuses(self) -> list[int]:
        return [hit.status for hit in self.hits]

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._closing.set()
            self._server.shutdown()
            self._server.server_close()


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, timeout: float = 30.0, what: str = ""
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)
