"""Real longops processes for multi-instance tests: start, find the leader, kill, wait."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def wait_for_async(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


@dataclass
class Cluster:
    """Processes of one test, all stopped at the end."""

    workdir: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, *args: str, **env: str) -> Process:
        log_path = self.workdir / f"{name}.log"
        handle = log_path.open("wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "longops", *args],
            env={**os.environ, **self.env, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def start_simulator(self, *extra: str) -> str:
        port = free_port()
        self.start(
            "simulator", "simulator", "--port", str(port), "--state-dir", str(self.workdir / "sim"), *extra
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/_simulator/stats"), 30, "the simulator to listen")
        self.env["LONGOPS_SIMULATOR_URL"] = url
        return url

    def start_server(self, name: str, *args: str) -> str:
        port = free_port()
        self.start(name, "serve", "--port", str(port), *args)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/healthz"), 60, f"{name} to listen")
        return url

    def stop_all(self) -> None:
        for process in self.processes:
            process.kill()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def cluster(workdir: Path, **env: str) -> Iterator[Cluster]:
    group = Cluster(workdir, dict(env))
    try:
        yield group
    finally:
        group.stop_all()
