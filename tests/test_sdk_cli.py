"""The SDK and the CLI against a loopback stand-in for the remote longops service.

``StandIn`` is not our server and mocks none of our code: it is the far end of the wire, replaying the
DESIGN §5-shaped answers each test scripts and recording what it received, so these tests pin the
client side of the HTTP contract (error envelope, Idempotency-Key, retries, polling, NDJSON streaming).
End-to-end tests against the real server live elsewhere.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

import longops
from longops.cli import app
from longops.domain.schemas import Batch

NOW = "2025-01-02T03:04:05Z"


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    lines: list[str] | None = None  # NDJSON, written and flushed one line at a time
    hold_after_first_line: threading.Event | None = None  # wait for this before the other lines


DROP = Reply(status=0)  # read the request, then close the connection without answering


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class StandIn:
    """Scripted far end: ``on(method, path, *replies)`` answers in order, repeating the last reply."""

    def __init__(self) -> None:
        self.url = ""
        self.received: list[Received] = []
        self.held_line_released = True
        self._script: dict[tuple[str, str], list[Reply]] = {}
        self._lock = threading.Lock()

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self._script[(method, path)] = list(replies)

    def calls(self, method: str, path: str) -> list[Received]:
        return [r for r in self.received if (r.method, r.path) == (method, path)]

    def take(self, received: Received) -> Reply:
        with self._lock:
            self.received.append(received)
            queue = self._script.get((received.method, received.path))
            if not queue:
                return error(404, "not_found", f"no route {received.method} {received.path}")
            return queue.pop(0) if len(queue) > 1 else queue[0]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received = Received(
            self.command,
            url.path,
            parse_qs(url.query),
            {k.lower(): v for k, v in self.headers.items()},
            json.loads(raw) if raw else None,
        )
        reply = self.server.stand_in.take(received)
        if reply is DROP:
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.lines is None:
            payload = json.dumps(reply.body).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()  # no length: HTTP/1.0, the body ends when the connection closes
        for number, line in enumerate(reply.lines):
            self.wfile.write(line.encode() + b"\n")
            self.wfile.flush()
            if number == 0 and reply.hold_after_first_line is not None:
                released = reply.hold_after_first_line.wait(timeout=10)
                self.server.stand_in.held_line_released = released

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    stand_in: StandIn


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stand_in = StandIn()
    server.stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server.stand_in
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def _no_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LONGOPS_SERVER_URL", raising=False)
    monkeypatch.delenv("LONGOPS_API_KEY", raising=False)


def error(status: int, type: str, message: str, **headers: str) -> Reply:
    return Reply(status, {"error": {"type": type, "message": message}}, headers)


def batch(id: str = "job_1", status: str = "running", total: int = 3, processing: int = 3) -> dict[str, Any]:
    return {
        "id": id,
        "object": "batch",
        "job_type": "llm_batch",
        "status": status,
        "provider": "anthropic",
        "created_at": NOW,
        "updated_at": NOW,
        "started_at": None,
        "completed_at": NOW if status in ("completed", "failed", "cancelled", "expired") else None,
        "expires_at": None,
        "cancel_requested_at": None,
        "request_counts": {
            "total": total,
            "processing": processing,
            "succeeded": total - processing,
            "errored": 0,
            "cancelled": 0,
            "expired": 0,
        },
        "metadata": {},
        "callback_url": None,
        "callback": {"sent_at": None, "status_code": None, "error": None, "attempts": 0},
        "provider_batches": [
            {
                "id": "pb_1",
                "provider_batch_id": "msgbatch_1",
                "status": "running",
                "processing_status": "in_progress",
                "request_count": total,
                "last_polled_at": NOW,
                "error": None,
            }
        ],
        "stop_reason": None,
        "error": None,
    }


def job(id: str = "job_9", status: str = "created") -> dict[str, Any]:
    return {
        "id": id,
        "object": "job",
        "job_type": "ingest_report",
        "status": status,
        "input": {"path": "r.csv"},
        "created_at": NOW,
        "updated_at": NOW,
    }


def result_line(custom_id: str) -> str:
    response = {"type": "message", "content": [{"type": "text", "text": f"answer {custom_id}"}]}
    return json.dumps({"custom_id": custom_id, "status": "succeeded", "response": response, "error": None})


REQUESTS = [{"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": []}}]


# --- SDK --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "type", "cls"),
    [
        (400, "invalid_request", longops.BadRequestError),
        (401, "authentication_error", longops.AuthenticationError),
        (404, "not_found", longops.NotFoundError),
        (409, "invalid_transition", longops.ConflictError),
        (409, "idempotency_conflict", longops.ConflictError),
        (413, "payload_too_large", longops.PayloadTooLargeError),
        (422, "validation_error", longops.ValidationError),
        (429, "rate_limited", longops.RateLimitError),
        (500, "internal_error", longops.InternalServerError),
    ],
)
def test_error_envelope_becomes_typed_exception(
    stand_in: StandIn, status: int, type: str, cls: type[longops.APIError]
) -> None:
    stand_in.on("POST", "/v1/batches/job_1/cancel", error(status, type, "batch job_1 says no"))
    with longops.Client(stand_in.url, max_retries=0) as client, pytest.raises(cls) as caught:
        client.batches.cancel("job_1")
    assert isinstance(caught.value, longops.APIError)
    assert (caught.value.status_code, caught.value.type, caught.value.message) == (
        status,
        type,
        "batch job_1 says no",
    )
    assert str(caught.value) == f"{type}: batch job_1 says no"


def test_error_without_envelope_still_readable(stand_in: StandIn) -> None:
    stand_in.on("GET", "/v1/batches/job_1", Reply(502, "<html>bad gateway</html>"))
    with (
        longops.Client(stand_in.url, max_retries=0) as client,
        pytest.raises(longops.InternalServerError) as caught,
    ):
        client.batches.retrieve("job_1")
    assert caught.value.status_code == 502
    assert caught.value.type == "internal_error"
    assert "502" in caught.value.message


def test_create_reuses_one_idempotency_key_across_retries(stand_in: StandIn) -> None:
    stand_in.on(
        "POST",
        "/v1/batches",
        error(503, "internal_error", "try again", **{"Retry-After": "0"}),
        DROP,
        Reply(201, batch()),
        Reply(201, batch(id="job_2")),
    )
    with longops.Client(stand_in.url, api_key="lo_secret", max_retries=2) as client:
        created = client.batches.create(provider="anthropic", requests=REQUESTS, metadata={"team": "x"})
        client.batches.create(provider="anthropic", requests=REQUESTS)

    assert isinstance(created, Batch)
    assert created.id == "job_1"
    first_call, second_call = stand_in.received[:3], stand_in.received[3]
    keys = {r.headers["idempotency-key"] for r in first_call}
    assert len(keys) == 1 and keys != {""}
    assert second_call.headers["idempotency-key"] not in keys  # a new call is a new key
    assert {r.headers["authorization"] for r in stand_in.received} == {"Bearer lo_secret"}
    assert first_call[0].body == {"provider": "anthropic", "requests": REQUESTS, "metadata": {"team": "x"}}


def test_create_sends_the_callers_idempotency_key(stand_in: StandIn) -> None:
    stand_in.on("POST", "/v1/batches", Reply(201, batch()))
    with longops.Client(stand_in.url) as client:
        client.batches.create(provider="anthropic", requests=REQUESTS, idempotency_key="nightly-2025-01-02")
    assert stand_in.received[0].headers["idempotency-key"] == "nightly-2025-01-02"
    assert "authorization" not in stand_in.received[0].headers


def test_client_reads_server_url_and_key_from_the_environment(
    stand_in: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LONGOPS_SERVER_URL", stand_in.url + "/")
    monkeypatch.setenv("LONGOPS_API_KEY", "lo_from_env")
    stand_in.on("GET", "/v1/batches/job_1", Reply(body=batch()))
    with longops.Client() as client:
        assert client.batches.retrieve("job_1").id == "job_1"
    assert stand_in.received[0].headers["authorization"] == "Bearer lo_from_env"


def test_malformed_server_url_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="invalid longops server URL"):
        longops.Client("localhost:8000")


def test_retries_stop_after_max_retries(stand_in: StandIn) -> None:
    stand_in.on("GET", "/v1/batches/job_1", error(503, "internal_error", "down", **{"Retry-After": "0"}))
    with longops.Client(stand_in.url, max_retries=1) as client, pytest.raises(longops.InternalServerError):
        client.batches.retrieve("job_1")
    assert len(stand_in.received) == 2


def test_job_create_reuses_one_idempotency_key_across_retries(stand_in: StandIn) -> None:
    # An unknown outcome (the connection dropped after the request was sent) is resent with the same
    # key, so the server answers with the job it may already have created.
    stand_in.on("POST", "/v1/jobs", DROP, Reply(201, job()), Reply(201, job(id="job_10")))
    with longops.Client(stand_in.url, max_retries=2) as client:
        created = client.jobs.create(job_type="ingest_report", input={"path": "r.csv"})
        client.jobs.create(job_type="ingest_report", input={"path": "r.csv"}, idempotency_key="mine")
    assert created.id == "job_9"
    first, resent, other = stand_in.calls("POST", "/v1/jobs")
    assert first.headers["idempotency-key"] == resent.headers["idempotency-key"] != ""
    assert first.body == resent.body == {"job_type": "ingest_report", "input": {"path": "r.csv"}}
    assert other.headers["idempotency-key"] == "mine"


def test_redeliver_is_not_resent_after_an_unknown_outcome(stand_in: StandIn) -> None:
    # Each redelivery queues the event once more: a resend could deliver it an extra time.
    stand_in.on("POST", "/v1/batches/job_1/deliveries/redeliver", DROP)
    with longops.Client(stand_in.url, max_retries=2) as client, pytest.raises(longops.APIConnectionError):
        client.batches.redeliver("job_1")
    assert len(stand_in.received) == 1


def test_wait_polls_until_terminal_and_reports_progress(stand_in: StandIn) -> None:
    stand_in.on(
        "GET",
        "/v1/batches/job_1",
        Reply(body=batch(processing=3)),
        Reply(body=batch(processing=1)),
        Reply(body=batch(status="completed", processing=0)),
    )
    seen: list[Batch] = []
    with longops.Client(stand_in.url) as client:
        final = client.batches.wait("job_1", poll_interval=0.01, on_progress=seen.append)
    assert final.status == "completed"
    assert [(b.status, b.request_counts.processing) for b in seen] == [
        ("running", 3),
        ("running", 1),
        ("completed", 0),
    ]


def test_wait_gives_up_at_the_timeout(stand_in: StandIn) -> None:
    stand_in.on("GET", "/v1/jobs/job_9", Reply(body=job(status="running")))
    with longops.Client(stand_in.url) as client, pytest.raises(longops.WaitTimeout) as caught:
        client.jobs.wait("job_9", timeout=0.2, poll_interval=0.05)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.last.status == "running"
    assert len(stand_in.received) >= 2


def test_results_are_streamed_line_by_line(stand_in: StandIn) -> None:
    second_half = threading.Event()
    lines = [result_line("a"), "", result_line("b"), result_line("c")]
    stand_in.on("GET", "/v1/batches/job_1/results", Reply(lines=lines, hold_after_first_line=second_half))
    with longops.Client(stand_in.url) as client:
        stream = client.batches.results("job_1")
        first = next(stream)  # arrives while the service still holds the rest back
        second_half.set()
        rest = list(stream)
    assert stand_in.held_line_released
    assert first.custom_id == "a"
    assert first.response["content"][0]["text"] == "answer a"
    assert [line.custom_id for line in rest] == ["b", "c"]
    assert stand_in.received[0].headers["accept"] == "application/x-ndjson"


def test_list_all_follows_last_id(stand_in: StandIn) -> None:
    first = Reply(body={"data": [batch("job_3"), batch("job_2")], "has_more": True, "last_id": "job_2"})
    last = Reply(body={"data": [batch("job_1")], "has_more": False, "last_id": "job_1"})
    stand_in.on("GET", "/v1/batches", first, first, last)
    with longops.Client(stand_in.url) as client:
        page = client.batches.list(status="running", limit=2)
        assert [b.id for b in page.data] == ["job_3", "job_2"] and page.has_more
        everything = [b.id for b in client.batches.list_all(status="running", page_size=2)]
    assert everything == ["job_3", "job_2", "job_1"]
    queries = [r.query for r in stand_in.received]
    first_page = {"status": ["running"], "limit": ["2"]}
    assert queries == [first_page, first_page, {**first_page, "after": ["job_2"]}]


async def test_async_client_has_the_same_surface(stand_in: StandIn) -> None:
    stand_in.on("POST", "/v1/batches", DROP, Reply(201, batch()))
    stand_in.on(
        "GET", "/v1/batches/job_1", Reply(body=batch()), Reply(body=batch(status="completed", processing=0))
    )
    stand_in.on("GET", "/v1/batches/job_1/results", Reply(lines=[result_line("a"), result_line("b")]))
    stand_in.on("GET", "/v1/jobs/job_x", error(404, "not_found", "job job_x not found"))
    seen: list[str] = []

    async def on_progress(current: Batch) -> None:
        seen.append(current.status)

    async with longops.AsyncClient(stand_in.url) as client:
        created = await client.batches.create(provider="anthropic", requests=REQUESTS)
        final = await client.batches.wait(created.id, poll_interval=0.01, on_progress=on_progress)
        lines = [line.custom_id async for line in client.batches.results(created.id)]
        with pytest.raises(longops.NotFoundError) as caught:
            await client.jobs.retrieve("job_x")

    posts = stand_in.calls("POST", "/v1/batches")
    assert len(posts) == 2 and posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert final.status == "completed" and seen == ["running", "completed"]
    assert lines == ["a", "b"]
    assert caught.value.type == "not_found"


# --- CLI --------------------------------------------------------------------------------------------

runner = CliRunner()


def run_cli(stand_in: StandIn, *args: str) -> Any:
    return runner.invoke(app, ["--server-url", stand_in.url, *args])


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"custom_id": "b", "params": {', "not valid JSON"),
        ('{"custom_id": "b"}', "params: is required"),
        ('{"custom_id": "b c", "params": {}}', "custom_id: must be a string matching"),
        ('["b", {}]', "must be an object"),
        ('{"custom_id": "a", "params": {}}', "custom_id 'a' is already used on line 1"),
    ],
)
def test_cli_submit_reports_a_bad_line_and_sends_nothing(
    stand_in: StandIn, tmp_path: Path, bad_line: str, message: str
) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text(json.dumps(REQUESTS[0]) + "\n\n" + bad_line + "\n")
    result = run_cli(stand_in, "submit", str(path), "--provider", "anthropic")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path} line 3: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert stand_in.received == []


def test_cli_unreachable_server_is_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens here once closed
    result = runner.invoke(app, ["--server-url", url, "status", "job_1"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: the longops server isn't reachable at {url}")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_cli_api_error_is_one_line(stand_in: StandIn) -> None:
    stand_in.on("GET", "/v1/batches/job_x", error(404, "not_found", "batch job_x not found"))
    stand_in.on("GET", "/v1/jobs/job_x", error(404, "not_found", "job job_x not found"))
    result = run_cli(stand_in, "status", "job_x")
    assert result.exit_code == 1
    assert result.stderr == "error: not_found: job job_x not found\n"


def test_cli_submit_wait_writes_results(stand_in: StandIn, tmp_path: Path) -> None:
    source, output = tmp_path / "batch.jsonl", tmp_path / "out.jsonl"
    requests = [{"custom_id": cid, "params": {"model": "m"}} for cid in ("a", "b")]
    source.write_text("".join(json.dumps(r) + "\n" for r in requests))
    stand_in.on("POST", "/v1/batches", Reply(201, batch(total=2, processing=2)))
    stand_in.on("GET", "/v1/batches/job_1", Reply(body=batch(status="completed", total=2, processing=0)))
    stand_in.on("GET", "/v1/batches/job_1/results", Reply(lines=[result_line("a"), result_line("b")]))

    result = run_cli(
        stand_in, "submit", str(source), "--provider", "anthropic", "--metadata", '{"run": 7}', "--wait",
        "--output", str(output),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout == "job_1\n"
    assert stand_in.calls("POST", "/v1/batches")[0].body == {
        "provider": "anthropic",
        "requests": requests,
        "metadata": {"run": 7},
    }
    assert [json.loads(line)["custom_id"] for line in output.read_text().splitlines()] == ["a", "b"]
    assert "wrote 2 results" in result.stderr and "completed" in result.stderr


def test_cli_status_list_results_cancel(stand_in: StandIn) -> None:
    stand_in.on("GET", "/v1/batches/job_1", Reply(body=batch(processing=1)))
    stand_in.on("GET", "/v1/batches", Reply(body={"data": [batch()], "has_more": True, "last_id": "job_1"}))
    stand_in.on("GET", "/v1/batches/job_1/results", Reply(lines=[result_line("a")]))
    stand_in.on(
        "POST", "/v1/jobs/job_1/cancel", Reply(body={**job("job_1", "running"), "job_type": "llm_batch"})
    )

    status = run_cli(stand_in, "status", "job_1")
    assert status.exit_code == 0 and "job_1  running" in status.stdout and "msgbatch_1" in status.stdout
    raw = run_cli(stand_in, "status", "job_1", "--json")
    assert json.loads(raw.stdout)["request_counts"]["processing"] == 1
    listing = run_cli(stand_in, "list", "--status", "running", "--limit", "1")
    assert listing.exit_code == 0 and "job_1" in listing.stdout
    assert "longops list --after job_1" in listing.stderr
    results = run_cli(stand_in, "results", "job_1")
    assert [json.loads(line)["custom_id"] for line in results.stdout.splitlines()] == ["a"]
    cancelled = run_cli(stand_in, "cancel", "job_1")
    assert cancelled.stdout == "job_1 cancel requested; still running until the provider or handler stops\n"
