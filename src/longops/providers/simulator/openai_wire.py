"""The simulator's OpenAI Files + Batches API, beside the Anthropic one (same faults and controls).

Endpoints: ``POST /v1/files`` (multipart ``file`` + ``purpose``) · ``GET /v1/files/{id}`` ·
``GET /v1/files/{id}/content`` · ``DELETE /v1/files/{id}`` · ``POST /v1/batches`` ·
``GET /v1/batches`` (newest first, ``after``, ``limit`` 1-100) · ``GET /v1/batches/{id}`` ·
``POST /v1/batches/{id}/cancel``. Errors use OpenAI's envelope ``{"error": {"message", "type",
"param", "code"}}``.

Processing is the Anthropic wire's model (:mod:`.state`, its own :class:`SimulatorState` so the
two lists never mix). Statuses: ``validating`` (the create's answer), ``in_progress``,
``cancelling``, then ``completed``, ``expired`` (the 24 h window, or ``expiry_seconds``) or
``cancelled``; a batch whose input has a line for another ``url``, an unreadable line or an item
with ``[sim:fail]`` is ``failed`` at once with ``errors`` naming the line.

Result files are virtual, generated from the batch when read (flat memory), as the real API's:

* output file — succeeded items (``response.status_code`` 200, the endpoint's body from
  :func:`~.openai_answers.answer`), and items errored with an explicit type (``[sim:error=TYPE]``,
  an invalid body): ``status_code`` 400 (500 for ``api_error``/``server_error``) and
  ``body.error.type`` = TYPE;
* error file — items errored without a type (``[sim:error]``, the error rate: code
  ``server_error``), and requests the batch never ran (``batch_expired``, ``batch_cancelled``).

``[sim:lost]`` items are in neither file. Uploaded input files keep only the derived items (no
request bodies); their content is not served back. With a ``state_dir`` the items live only on
disk (as on the Anthropic wire) and files, batches and deletions survive a restart
(``files/``, ``openai_batches/``, ``deleted.txt``; the processing state under ``batches/``).
Fault endpoint names: ``upload`` (POST /v1/files), ``create``, ``retrieve``, ``list``,
``cancel``, ``results`` (file content), ``delete``.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from longops.providers.simulator.openai_answers import ENDPOINTS, answer, derive_openai_item
from longops.providers.simulator.state import (
    ItemFile,
    SimApiError,
    SimBatch,
    SimConfig,
    SimItem,
    SimulatorState,
)

_FAIL_MARKER = "[sim:fail]"
_SERVER_ERRORS = frozenset({"api_error", "server_error"})
_UNPROCESSED = {
    "canceled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
}


@dataclass
class SimFile:
    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str
    items: list[SimItem] | ItemFile | None = None  # an uploaded input file's requests, derived
    problems: list[dict[str, Any]] = field(default_factory=list)  # its unreadable lines
    endpoints: list[str] = field(default_factory=list)  # the urls its lines name
    batch_id: str | None = None  # for an output or error file: whose
    kind: str = "input"  # input | output | error


@dataclass
class OpenAIBatch:
    id: str
    sim: SimBatch | None  # None: failed at validation
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created_at: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0  # creation order (list is newest first)
    # Once ended (it never changes again): (completed, failed, has output lines, has error lines).
    summary: tuple[int, int, bool, bool] | None = None


# What is persisted of each (the rest is derived again, or lives in the items file).
_FILE_FIELDS = ("id", "filename", "bytes", "created_at", "purpose", "problems", "endpoints")
_BATCH_FIELDS = ("id", "endpoint", "input_file_id", "metadata", "created_at", "errors", "seq")


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class OpenAIState:
    """Files and batches of the OpenAI wire (in memory: items only, no request bodies)."""

    def __init__(self, config: SimConfig, *, state_dir: str | os.PathLike[str] | None = None) -> None:
        self._dir = Path(state_dir) if state_dir is not None else None
        self.sim = SimulatorState(config, state_dir=self._dir / "batches" if self._dir is not None else None)
        self.files: dict[str, SimFile] = {}
        self.batches: dict[str, OpenAIBatch] = {}
        self._deleted: set[str] = set()  # result files deleted (they are never created again)
        self._lock = threading.Lock()
        if self._dir is not None:
            (self._dir / "files").mkdir(parents=True, exist_ok=True)
            (self._dir / "openai_batches").mkdir(exist_ok=True)
            self._load(self._dir)

    def _load(self, directory: Path) -> None:
        for path in (directory / "files").glob("*.json"):
            meta = json.loads(path.read_text())
            self.files[meta["id"]] = SimFile(**meta, items=ItemFile(path.with_suffix(".items.jsonl")))
        loaded = [json.loads(path.read_text()) for path in (directory / "openai_batches").glob("*.json")]
        for meta in sorted(loaded, key=lambda m: m["seq"]):
            sim_id = meta.pop("sim_id")
            self.batches[meta["id"]] = OpenAIBatch(**meta, sim=self.sim.get(sim_id) if sim_id else None)
        deleted = directory / "deleted.txt"
        if deleted.exists():
            self._deleted = set(deleted.read_text().split())

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def upload(self, filename: str, purpose: str, handle: IO[bytes]) -> SimFile:
        """Read an uploaded JSONL file line by line (blocking: runs in a thread). With a state
        directory the derived items go straight to disk."""
        file_id = _new_id("file-")
        items_path = self._dir / "files" / f"{file_id}.items.jsonl" if self._dir is not None else None
        sink = items_path.open("wb") if items_path is not None else None
        try:
            record = self._read_upload(file_id, filename, purpose, handle, sink)
        finally:
            if sink is not None:
                sink.close()
        if self._dir is not None and items_path is not None:
            meta = {name: getattr(record, name) for name in _FILE_FIELDS}
            self._write(self._dir / "files" / f"{file_id}.json", meta)
            record.items = ItemFile(items_path)
        with self._lock:
            self.files[record.id] = record
        return record

    def _read_upload(
        self, file_id: str, filename: str, purpose: str, handle: IO[bytes], sink: IO[bytes] | None
    ) -> SimFile:
        items: list[SimItem] = []
        problems: list[dict[str, Any]] = []
        endpoints: set[str] = set()
        seen: set[str] = set()
        size = count = 0
        error_rate = self.sim.config.error_rate
        for number, line in enumerate(handle, start=1):
            size += len(line)
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
                custom_id, url, body = entry["custom_id"], entry["url"], entry["body"]
                if not isinstance(custom_id, str) or not isinstance(url, str) or custom_id in seen:
                    raise ValueError("custom_id must be a unique string and url a string")
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(
                    {"code": "invalid_json_line", "message": f"line {number}: {exc}", "line": number}
                )
                continue
            seen.add(custom_id)
            endpoints.add(url)
            item = derive_openai_item(custom_id, url, body, error_rate)
            count += 1
            if sink is None:
                items.append(item)
            else:
                sink.write(orjson.dumps(list(item), option=orjson.OPT_APPEND_NEWLINE))
        if purpose == "batch" and not count and not problems:
            raise SimApiError(400, "invalid_request_error", "file: the batch input file has no requests")
        created = int(self.sim.clock())
        return SimFile(file_id, filename, size, created, purpose, items, problems, sorted(endpoints))

    def file(self, file_id: str) -> SimFile:
        record = self.files.get(file_id)
        if record is None:
            raise SimApiError(404, "invalid_request_error", f"No such File object: {file_id}")
        return record

    def delete_file(self, file_id: str) -> SimFile:
        with self._lock:
            record = self.file(file_id)
            del self.files[file_id]
            self._deleted.add(file_id)
            if self._dir is not None:
                with (self._dir / "deleted.txt").open("a") as deleted:
                    deleted.write(file_id + "\n")
                for suffix in (".json", ".items.jsonl"):
                    (self._dir / "files" / f"{file_id}{suffix}").unlink(missing_ok=True)
        return record

    def create(self, input_file_id: str, endpoint: str, metadata: dict[str, str] | None) -> OpenAIBatch:
        source = self.file(input_file_id)
        if source.items is None or source.purpose != "batch":
            raise SimApiError(400, "invalid_request_error", f"{input_file_id} is not a batch input file")
        errors = list(source.problems)
        errors += [
            {
                "code": "invalid_url",
                "message": f"the file's lines name {url}, not the batch's endpoint",
                "line": None,
            }
            for url in source.endpoints
            if url != endpoint
        ]
        errors += [
            {
                "code": "invalid_request",
                "message": f"Simulated validation failure ({item.custom_id})",
                "line": n,
            }
            for n, item in enumerate(source.items, start=1)
            if _FAIL_MARKER in item.text
        ][:1]
        sim = None if errors else self.sim.create(source.items)
        with self._lock:
            batch = OpenAIBatch(
                _new_id("batch_"),
                sim,
                endpoint,
                input_file_id,
                metadata,
                int(self.sim.clock()),
                errors,
                seq=len(self.batches) + 1,
            )
            self.batches[batch.id] = batch
            if self._dir is not None:
                meta = {name: getattr(batch, name) for name in _BATCH_FIELDS}
                meta["sim_id"] = sim.id if sim is not None else None
                self._write(self._dir / "openai_batches" / f"{batch.id}.json", meta)
        return batch

    def get(self, batch_id: str) -> OpenAIBatch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise SimApiError(404, "invalid_request_error", f"No batch found with id '{batch_id}'")
        return batch

    def cancel(self, batch_id: str) -> OpenAIBatch:
        batch = self.get(batch_id)
        if batch.sim is None or self.status(batch) not in ("in_progress", "validating"):
            raise SimApiError(
                400, "invalid_request_error", f"Cannot cancel a batch with status {self.status(batch)}"
            )
        self.sim.cancel(batch.sim.id)
        return batch

    def finish(self, batch_id: str) -> OpenAIBatch:
        batch = self.get(batch_id)
        if batch.sim is not None:
            self.sim.finish(batch.sim.id)
        return batch

    def status(self, batch: OpenAIBatch) -> str:
        if batch.sim is None:
            return "failed"
        word = batch.sim.processing_status(self.sim.clock())
        if word == "in_progress":
            return "in_progress"
        if word == "canceling":
            return "cancelling"
        if batch.sim.cancel_initiated_at is not None and batch.sim.ended_at() < batch.sim.expires_at:
            return "cancelled"
        return "expired" if batch.sim.ended_at() >= batch.sim.expires_at else "completed"

    def page(self, *, limit: int, after: str | None) -> tuple[list[OpenAIBatch], bool]:
        with self._lock:
            newest_first = list(reversed(self.batches.values()))
        start = newest_first.index(self.get(after)) + 1 if after is not None else 0
        return newest_first[start : start + limit], start + limit < len(newest_first)

    def _summary(self, batch: OpenAIBatch) -> tuple[int, int, bool, bool]:
        if batch.summary is None:
            assert batch.sim is not None
            completed = failed = 0
            has_output = has_error = False
            for item, kind in batch.sim.outcomes():
                completed, failed = (
                    (completed + 1, failed) if kind in ("succeeded", "lost") else (completed, failed + 1)
                )
                in_error = _in_error_file(item, kind)
                has_error, has_output = has_error or in_error, has_output or (not in_error and kind != "lost")
            batch.summary = (completed, failed, has_output, has_error)
        return batch.summary

    def _result_file(self, batch: OpenAIBatch, kind: str, present: bool) -> str | None:
        """The id of an ended batch's output or error file (registered on first sight)."""
        file_id = f"file-{kind[:3]}-{batch.id.removeprefix('batch_')}"
        if not present:
            return None
        with self._lock:
            if file_id not in self.files and file_id not in self._deleted:
                name = f"batch_{kind}.jsonl"
                record = SimFile(
                    file_id, name, 0, int(self.sim.clock()), "batch_output", batch_id=batch.id, kind=kind
                )
                self.files[file_id] = record
        return file_id

    def to_wire(self, batch: OpenAIBatch, *, status: str | None = None) -> dict[str, Any]:
        status = status or self.status(batch)
        ended = status in ("completed", "expired", "cancelled")
        total = batch.sim.request_count if batch.sim is not None else 0
        completed = failed = 0
        output_file_id = error_file_id = None
        if ended:
            completed, failed, has_output, has_error = self._summary(batch)
            output_file_id = self._result_file(batch, "output", has_output)
            error_file_id = self._result_file(batch, "error", has_error)
        at = batch.created_at
        ended_at = int(batch.sim.ended_at()) if ended and batch.sim is not None else None
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": output_file_id,
            "error_file_id": error_file_id,
            "created_at": at,
            "in_progress_at": at if status not in ("validating", "failed") else None,
            "expires_at": int(batch.sim.expires_at) if batch.sim is not None else at + 86400,
            "finalizing_at": ended_at,
            "completed_at": ended_at if status == "completed" else None,
            "failed_at": at if status == "failed" else None,
            "expired_at": ended_at if status == "expired" else None,
            "cancelling_at": int(batch.sim.cancel_initiated_at)
            if batch.sim is not None and batch.sim.cancel_initiated_at is not None
            else None,
            "cancelled_at": ended_at if status == "cancelled" else None,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": batch.metadata,
        }

    def content(self, file_id: str) -> Iterator[bytes]:
        record = self.file(file_id)
        if record.batch_id is None:
            raise SimApiError(400, "invalid_request_error", "The simulator does not serve input files back")
        batch = self.get(record.batch_id)
        assert batch.sim is not None
        want_error = record.kind == "error"
        return (
            _line(batch, item, kind)
            for item, kind in batch.sim.outcomes()
            if kind != "lost" and _in_error_file(item, kind) == want_error
        )


def _in_error_file(item: SimItem, kind: str) -> bool:
    return kind in _UNPROCESSED or (kind == "errored" and item.error_type == "overloaded_error")


def _line(batch: OpenAIBatch, item: SimItem, kind: str) -> bytes:
    request_id = f"batch_req_{secrets.token_hex(8)}"
    line: dict[str, Any] = {"id": request_id, "custom_id": item.custom_id, "response": None, "error": None}
    if kind == "succeeded":
        body = answer(batch.endpoint, item, f"{batch.id}/{item.custom_id}", batch.created_at)
        line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
    elif kind in _UNPROCESSED:
        code, message = _UNPROCESSED[kind]
        line["error"] = {"code": code, "message": message}
    elif item.error_type == "overloaded_error":
        line["error"] = {"code": "server_error", "message": item.error_message}
    else:
        error = {"message": item.error_message, "type": item.error_type, "param": None, "code": None}
        status = 500 if item.error_type in _SERVER_ERRORS else 400
        line["response"] = {"status_code": status, "request_id": request_id, "body": {"error": error}}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def openai_error(status_code: int, error_type: str, message: str) -> Response:
    kind = {"not_found_error": "invalid_request_error", "rate_limit_error": "rate_limit_exceeded"}.get(
        error_type, error_type
    )
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def openai_routes(state: OpenAIState, faults: Any, stats: Any, stream: Any) -> list[Route]:
    """The OpenAI wire's routes, sharing the Anthropic wire's ``faults``, ``stats`` and results
    ``stream`` (see :mod:`.app`)."""

    async def upload(request: Request) -> Response:
        async with request.form(max_files=1, max_fields=4) as form:
            stats.count("upload")
            faults.raise_error("upload")
            file, purpose = form.get("file"), form.get("purpose")
            if file is None or isinstance(file, str):
                raise SimApiError(400, "invalid_request_error", "file: a file part is required")
            if purpose not in ("batch", "user_data"):
                raise SimApiError(400, "invalid_request_error", "purpose: must be batch")
            record = await anyio.to_thread.run_sync(
                state.upload, file.filename or "upload.jsonl", purpose, file.file
            )
        await faults.hold("upload", request)
        return _json(_file_wire(record))

    async def get_file(request: Request) -> Response:
        return _json(_file_wire(state.file(request.path_params["file_id"])))

    async def delete_file(request: Request) -> Response:
        stats.count("delete", request.path_params["file_id"])
        faults.raise_error("delete")
        record = state.delete_file(request.path_params["file_id"])
        return _json({"id": record.id, "object": "file", "deleted": True})

    async def content(request: Request) -> Response:
        file_id = request.path_params["file_id"]
        stats.count("results", file_id)
        faults.raise_error("results")
        lines = state.content(file_id)
        await faults.hold("results", request)
        cut_after = faults.results_cuts.pop(0) if faults.results_cuts else None
        return StreamingResponse(stream(lines, cut_after), media_type="application/octet-stream")

    async def create(request: Request) -> Response:
        body = await request.body()
        stats.count("create")
        faults.raise_error("create")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise SimApiError(400, "invalid_request_error", "Request body is not valid JSON") from None
        endpoint, file_id = payload.get("endpoint"), payload.get("input_file_id")
        if endpoint not in ENDPOINTS:
            raise SimApiError(
                400, "invalid_request_error", f"endpoint: must be one of {', '.join(ENDPOINTS)}"
            )
        if payload.get("completion_window") != "24h":
            raise SimApiError(400, "invalid_request_error", "completion_window: must be 24h")
        metadata = payload.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
        ):
            raise SimApiError(400, "invalid_request_error", "metadata: must map strings to strings")
        if not isinstance(file_id, str):
            raise SimApiError(400, "invalid_request_error", "input_file_id: Field required")
        batch = await anyio.to_thread.run_sync(state.create, file_id, endpoint, metadata)
        faults.raise_error("create", faults.create_applied_errors)
        await faults.hold("create", request)
        return _json(state.to_wire(batch, status="failed" if batch.sim is None else "validating"))

    async def retrieve(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        stats.count("retrieve", batch_id)
        faults.raise_error("retrieve")
        wire = state.to_wire(state.get(batch_id))
        await faults.hold("retrieve", request)
        return _json(wire)

    async def list_batches(request: Request) -> Response:
        stats.count("list")
        faults.raise_error("list")
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            raise SimApiError(400, "invalid_request_error", "limit: must be between 1 and 100")
        batches, has_more = state.page(limit=limit, after=request.query_params.get("after"))
        data = [state.to_wire(batch) for batch in batches]
        await faults.hold("list", request)
        return _json(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": has_more,
            }
        )

    async def cancel(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        stats.count("cancel", batch_id)
        faults.raise_error("cancel")
        batch = state.cancel(batch_id)
        await faults.hold("cancel", request)
        return _json(state.to_wire(batch, status="cancelling"))

    return [
        Route("/v1/files", upload, methods=["POST"]),
        Route("/v1/files/{file_id}", get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", content, methods=["GET"]),
        Route("/v1/batches", create, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", retrieve, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel, methods=["POST"]),
    ]


def _file_wire(record: SimFile) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
