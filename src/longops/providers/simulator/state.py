"""The simulator's batches: validation, the deterministic processing model, persistence, results.

Processing model (all derived from timestamps, so nothing runs in the background and a restart
loses nothing): item ``i`` of ``n`` finishes at ``created_at + processing_seconds * (i + 1) / n``.
A batch ends at the earliest of

* its natural end, ``created_at + processing_seconds`` (never, if an item carries ``[sim:slow]``),
* ``cancel_initiated_at + cancel_seconds`` once cancelled (status ``canceling`` until then),
* ``expires_at`` (``created_at + expiry_seconds``, 24 h by default),
* the moment ``/_simulator/batches/{id}/finish`` was called.

At the end, an item finished by then keeps its own outcome; the others become ``canceled`` (the
batch was cancelled) or ``expired``. ``finish`` on a batch that is not canceling lets every
non-slow item finish with its own outcome and expires the slow ones. As in the real API,
``request_counts`` shows every request as ``processing`` until the batch has ended.

Memory and I/O: each request is reduced at create time to one compact :class:`SimItem` (custom id,
outcome, model, the echoed text, token counts) and the request body is dropped. With a
``state_dir`` the items live only on disk (``<id>.items.jsonl``, next to ``<id>.json`` for the
batch) and are re-read for each results stream, so memory stays flat whatever the batch size.
Results lines are generated lazily, one at a time (``orjson``: generating them must not be what a
benchmark of the engine's ingestion measures). A batch also keeps one character per item
(:func:`outcome_codes`), so a retrieve computes ``request_counts`` without touching the items:
the engine embeds the simulator in its own event loop, where a retrieve must stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
DAY_SECONDS = 24 * 3600.0

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MARKER = re.compile(r"\[sim:(slow|expire|lost|error)(?:=([a-z_]+))?\]")
_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghijkmnopqrstuvwxyz"


class SimApiError(Exception):
    """An answer in the Anthropic error envelope: ``{"type": "error", "error": {type, message}}``."""

    def __init__(
        self, status_code: int, error_type: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after  # seconds: sent as Retry-After


@dataclass
class SimConfig:
    """Knobs read when a batch is created (``cancel_seconds``: when it is cancelled)."""

    processing_seconds: float = 5.0
    cancel_seconds: float = 1.0
    error_rate: float = 0.0
    expiry_seconds: float = DAY_SECONDS
    live_latency_seconds: float = 0.0  # how long a live endpoint takes to answer

    def update(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            if name not in asdict(self):
                raise SimApiError(400, "invalid_request_error", f"{name}: unknown simulator setting")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SimApiError(400, "invalid_request_error", f"{name}: must be a number >= 0")
            if name == "error_rate" and value > 1:
                raise SimApiError(400, "invalid_request_error", "error_rate: must be between 0 and 1")
            setattr(self, name, float(value))


class SimItem(NamedTuple):
    """What the simulator keeps of one request (stored as a JSON array, one per line)."""

    custom_id: str
    outcome: str  # succeeded | errored | expired | slow
    error_type: str | None
    error_message: str | None
    model: str
    text: str  # the last user message's text, echoed back
    input_tokens: int  # input neither read from nor written to the cache
    max_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


def error_roll(custom_id: str) -> float:
    """A deterministic number in [0, 1) per custom_id: the item errors when it is below ``error_rate``."""
    digest = hashlib.sha256(custom_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        )
    return ""


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def _blocks(params: dict[str, Any]) -> Iterator[Any]:
    """The prompt's content in the order Anthropic caches it: system blocks, then each message's."""
    system = params.get("system")
    yield from system if isinstance(system, list) else [system]
    for message in params.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        yield from content if isinstance(content, list) else [content]


def cached_prefix_chars(params: dict[str, Any]) -> tuple[int, str]:
    """The characters of the prompt up to and including its last block marked ``cache_control``
    (0 if none), and a digest of that prefix (which requests share a cache entry)."""
    seen, cached = 0, 0
    digest, prefix = hashlib.sha256(), hashlib.sha256()
    for block in _blocks(params):
        text = _text_of([block] if isinstance(block, dict) else block)
        seen += len(text)
        digest.update(text.encode())
        if isinstance(block, dict) and isinstance(block.get("cache_control"), dict):
            cached, prefix = seen, digest.copy()
    return cached, prefix.hexdigest()


def _invalid(custom_id: str, problem: str) -> SimItem:
    return SimItem(custom_id, "errored", "invalid_request_error", problem, "", "", 1, 1)


def derive_outcome(custom_id: str, text: str, error_rate: float) -> tuple[str, str | None, str | None]:
    """(outcome, error type, error message) of a request whose text is ``text``: its marker, else
    the error roll (see the package docstring)."""
    marker = _MARKER.search(text)
    if marker is not None and marker.group(1) != "error":
        return {"slow": "slow", "expire": "expired", "lost": "lost"}[marker.group(1)], None, None
    if marker is not None or error_roll(custom_id) < error_rate:
        error_type = (marker.group(2) if marker else None) or "overloaded_error"
        return (
            "errored",
            error_type,
            "Overloaded" if error_type == "overloaded_error" else f"Simulated {error_type}",
        )
    return "succeeded", None, None


def derive_item(
    custom_id: str, params: dict[str, Any], error_rate: float, cache: set[str] | None = None
) -> SimItem:
    """Reduce one request to its outcome. Invalid ``params`` error the item, as the real API does:
    it validates them only while processing, not at create time.

    Prompt caching, deterministically: the characters up to the last block marked
    ``cache_control`` are the cached prefix, ``⌈chars / 4⌉`` tokens of it. The first request of a
    batch with a given prefix writes it (``cache_creation_input_tokens``); later ones with the same
    prefix read it (``cache_read_input_tokens``). ``cache`` holds the prefixes written so far in
    this batch; ``input_tokens`` counts the rest of the prompt."""
    model, max_tokens, messages = params.get("model"), params.get("max_tokens"), params.get("messages")
    if not isinstance(model, str) or not model:
        return _invalid(custom_id, "model: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return _invalid(custom_id, "max_tokens: Input should be an integer >= 1")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return _invalid(custom_id, "messages: Input should be a non-empty list of message objects")
    text = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    chars = len(_text_of(params.get("system"))) + sum(len(_text_of(m.get("content"))) for m in messages)
    outcome, error_type, error_message = derive_outcome(custom_id, text, error_rate)
    prefix_chars, prefix = cached_prefix_chars(params)
    if not prefix_chars:
        return SimItem(custom_id, outcome, error_type, error_message, model, text, _tokens(chars), max_tokens)
    cache = set() if cache is None else cache
    cached_tokens = math.ceil(prefix_chars / 4)
    key = f"{model}/{prefix}"  # a cache entry is per model
    written = key in cache
    cache.add(key)
    return SimItem(
        custom_id,
        outcome,
        error_type,
        error_message,
        model,
        text,
        math.ceil((chars - prefix_chars) / 4),
        max_tokens,
        cached_tokens if written else 0,
        0 if written else cached_tokens,
    )


def parse_create_body(body: bytes, error_rate: float) -> list[SimItem]:
    """Validate a create body like the real API (400 ``invalid_request_error``) and derive the items."""
    if len(body) > MAX_BODY_BYTES:
        raise SimApiError(413, "request_too_large", f"Request exceeds {MAX_BODY_BYTES} bytes")
    try:
        payload = orjson.loads(body)
    except ValueError:
        raise SimApiError(400, "invalid_request_error", "Request body is not valid JSON") from None
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list):
        raise SimApiError(400, "invalid_request_error", "requests: Field required (a list of requests)")
    if not requests:
        raise SimApiError(400, "invalid_request_error", "requests: List should have at least 1 item, not 0")
    if len(requests) > MAX_REQUESTS:
        raise SimApiError(
            400, "invalid_request_error", f"requests: at most {MAX_REQUESTS} per batch, got {len(requests)}"
        )
    seen: set[str] = set()
    cache: set[str] = set()
    items: list[SimItem] = []
    for index, request in enumerate(requests):
        if not isinstance(request, dict):
            raise SimApiError(400, "invalid_request_error", f"requests.{index}: Input should be an object")
        custom_id, params = request.get("custom_id"), request.get("params")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            raise SimApiError(
                400,
                "invalid_request_error",
                f"requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
            )
        if custom_id in seen:
            raise SimApiError(
                400, "invalid_request_error", f"requests.{index}.custom_id: Duplicate custom_id {custom_id!r}"
            )
        seen.add(custom_id)
        if not isinstance(params, dict):
            raise SimApiError(
                400, "invalid_request_error", f"requests.{index}.params: Field required (an object)"
            )
        items.append(derive_item(custom_id, params, error_rate, cache))
    return items


def _timestamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _counts(processing: int = 0) -> dict[str, int]:
    return {"processing": processing, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}


class ItemFile:
    """The items of a batch persisted as JSONL; iterable any number of times, read lazily."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[SimItem]:
        with self.path.open("rb") as lines:
            for line in lines:
                yield SimItem(*orjson.loads(line))


_CODES = {"succeeded": "s", "errored": "e", "expired": "x", "slow": "w", "lost": "l"}


def outcome_codes(items: Iterable[SimItem]) -> str:
    """One character per item, so counts are computed without reading the items."""
    return "".join(_CODES[item.outcome] for item in items)


@dataclass(eq=False)
class SimBatch:
    id: str
    seq: int
    created_at: float
    expires_at: float
    processing_seconds: float
    codes: str = field(repr=False)  # see outcome_codes
    items: list[SimItem] | ItemFile = field(repr=False)
    cancel_initiated_at: float | None = None
    cancel_seconds: float = 0.0
    forced_end_at: float | None = None

    @property
    def request_count(self) -> int:
        return len(self.codes)

    def ended_at(self) -> float:
        """When processing ends (or ended); ``inf`` while nothing will end it."""
        natural = math.inf if "w" in self.codes else self.created_at + self.processing_seconds
        cancel_end = math.inf
        if self.cancel_initiated_at is not None:
            cancel_end = self.cancel_initiated_at + self.cancel_seconds
        forced = math.inf if self.forced_end_at is None else self.forced_end_at
        return min(natural, cancel_end, forced, self.expires_at)

    def _ending(self) -> tuple[int, str]:
        """How many leading items had finished on their own at the end, and what the rest became."""
        end, n = self.ended_at(), self.request_count
        if "w" not in self.codes and self.created_at + self.processing_seconds <= end:
            return n, "expired"  # natural end: everything finished (and nothing is left over)
        if self.cancel_initiated_at is not None and end < self.expires_at:
            leftover = "canceled"
        elif self.forced_end_at == end:
            return n, "expired"  # finish: every non-slow item finishes now, slow ones expire
        else:
            leftover = "expired"
        if self.processing_seconds <= 0:
            return n, leftover
        # item i finishes at created_at + processing_seconds * (i + 1) / n
        return min(n, math.floor((end - self.created_at) * n / self.processing_seconds)), leftover

    def processing_status(self, now: float) -> str:
        if now >= self.ended_at():
            return "ended"
        return "in_progress" if self.cancel_initiated_at is None else "canceling"

    def outcomes(self) -> Iterator[tuple[SimItem, str]]:
        """Every item with its final result type, in request order (only meaningful once ended)."""
        finished, leftover = self._ending()
        for index, item in enumerate(self.items):
            yield item, item.outcome if index < finished and item.outcome != "slow" else leftover

    def request_counts(self, now: float) -> dict[str, int]:
        if self.processing_status(now) != "ended":
            return _counts(processing=self.request_count)
        finished, leftover = self._ending()
        head = self.codes[:finished]
        counts = _counts()
        succeeded = head.count("s") + head.count("l")  # a lost result was counted, then dropped
        counts.update(succeeded=succeeded, errored=head.count("e"), expired=head.count("x"))
        counts[leftover] += self.request_count - sum(counts.values())
        return counts

    def to_wire(self, now: float, base_url: str, *, status: str | None = None) -> dict[str, Any]:
        """The MessageBatch object. ``status`` pins the status a create or cancel answers with."""
        status = status or self.processing_status(now)
        ended = status == "ended"
        counts = self.request_counts(now) if ended else _counts(processing=self.request_count)
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": _timestamp(self.ended_at()) if ended else None,
            "created_at": _timestamp(self.created_at),
            "expires_at": _timestamp(self.expires_at),
            "archived_at": None,
            "cancel_initiated_at": _timestamp(self.cancel_initiated_at),
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "processing_seconds": self.processing_seconds,
            "codes": self.codes,
            "cancel_initiated_at": self.cancel_initiated_at,
            "cancel_seconds": self.cancel_seconds,
            "forced_end_at": self.forced_end_at,
        }


def result_line(batch_id: str, item: SimItem, result_type: str) -> bytes:
    """One line of the results JSONL, built on demand."""
    result: dict[str, Any]
    if result_type == "succeeded":
        result = {"type": "succeeded", "message": _message(batch_id, item)}
    elif result_type == "errored":
        error = {"type": item.error_type, "message": item.error_message}
        result = {"type": "errored", "error": {"type": "error", "error": error, "request_id": None}}
    else:
        result = {"type": result_type}
    return orjson.dumps({"custom_id": item.custom_id, "result": result}, option=orjson.OPT_APPEND_NEWLINE)


def _message(batch_id: str, item: SimItem) -> dict[str, Any]:
    digest = hashlib.sha256(f"{batch_id}/{item.custom_id}".encode()).hexdigest()
    text, stop_reason = item.text, "end_turn"
    if len(text) > item.max_tokens * 4:
        text, stop_reason = text[: item.max_tokens * 4], "max_tokens"
    return {
        "id": f"msg_{digest[:24]}",
        "type": "message",
        "role": "assistant",
        "model": item.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": item.input_tokens,
            "output_tokens": _tokens(len(text)),
            "cache_creation_input_tokens": item.cache_creation_input_tokens,
            "cache_read_input_tokens": item.cache_read_input_tokens,
            "service_tier": "batch",
        },
    }


def _new_batch_id() -> str:
    return "msgbatch_01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


class SimulatorState:
    """All batches, in memory and optionally in ``state_dir``.

    Mutations take a lock, because creates run in a worker thread (parsing 100 MB of JSON must not
    stall the event loop) while everything else runs on the loop.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SimConfig()
        self.clock = clock
        self._dir = Path(state_dir) if state_dir is not None else None
        self._batches: dict[str, SimBatch] = {}
        self._lock = threading.Lock()
        self._seq = 0
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._load(self._dir)

    def _load(self, directory: Path) -> None:
        loaded = []
        for path in directory.glob("*.json"):
            meta = json.loads(path.read_text())
            loaded.append(SimBatch(**meta, items=ItemFile(directory / f"{meta['id']}.items.jsonl")))
        for batch in sorted(loaded, key=lambda b: b.seq):
            self._batches[batch.id] = batch
            self._seq = max(self._seq, batch.seq)

    def _save(self, batch: SimBatch) -> None:
        if self._dir is not None:
            tmp = self._dir / f"{batch.id}.json.tmp"
            tmp.write_text(json.dumps(batch.metadata()))
            tmp.replace(self._dir / f"{batch.id}.json")

    def create(self, items: list[SimItem] | ItemFile) -> SimBatch:
        """Register a batch of already validated items (blocking: writes the items file). Items
        already on disk (an :class:`ItemFile`) are read, not held."""
        batch_id, codes = _new_batch_id(), outcome_codes(items)
        stored: list[SimItem] | ItemFile = items
        if self._dir is not None:
            stored = ItemFile(self._dir / f"{batch_id}.items.jsonl")
            with stored.path.open("wb") as out:
                out.writelines(orjson.dumps(list(item), option=orjson.OPT_APPEND_NEWLINE) for item in items)
        with self._lock:
            now = self.clock()
            self._seq += 1
            batch = SimBatch(
                id=batch_id,
                seq=self._seq,
                created_at=now,
                expires_at=now + self.config.expiry_seconds,
                processing_seconds=self.config.processing_seconds,
                codes=codes,
                items=stored,
            )
            self._save(batch)
            self._batches[batch_id] = batch
        return batch

    def get(self, batch_id: str) -> SimBatch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise SimApiError(404, "not_found_error", f"Message batch {batch_id!r} not found")
        return batch

    def page(self, *, limit: int, before_id: str | None, after_id: str | None) -> tuple[list[SimBatch], bool]:
        """Newest first. ``after_id``: the page of older batches after it; ``before_id``: newer ones."""
        with self._lock:
            newest_first = list(reversed(self._batches.values()))
        if after_id is not None:
            start = newest_first.index(self.get(after_id)) + 1
            return newest_first[start : start + limit], start + limit < len(newest_first)
        if before_id is not None:
            stop = newest_first.index(self.get(before_id))
            return newest_first[max(0, stop - limit) : stop], stop - limit > 0
        return newest_first[:limit], limit < len(newest_first)

    def cancel(self, batch_id: str) -> SimBatch:
        with self._lock:
            batch = self.get(batch_id)
            now = self.clock()
            if batch.processing_status(now) == "ended":
                raise SimApiError(
                    400,
                    "invalid_request_error",
                    f"Message batch {batch_id!r} has ended; it cannot be canceled",
                )
            if batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = now
                batch.cancel_seconds = self.config.cancel_seconds
                self._save(batch)
        return batch

    def finish(self, batch_id: str) -> SimBatch:
        """End the batch now (no-op if it has ended already)."""
        with self._lock:
            batch = self.get(batch_id)
            now = self.clock()
            if batch.processing_status(now) != "ended":
                batch.forced_end_at = now
                self._save(batch)
        return batch

    def results(self, batch_id: str) -> Iterator[bytes]:
        batch = self.get(batch_id)
        if batch.processing_status(self.clock()) != "ended":
            raise SimApiError(
                400, "invalid_request_error", f"Message batch {batch_id!r} has not finished processing yet"
            )
        return (
            result_line(batch.id, item, result_type)
            for item, result_type in batch.outcomes()
            if result_type != "lost"
        )

    def __len__(self) -> int:
        return len(self._batches)
