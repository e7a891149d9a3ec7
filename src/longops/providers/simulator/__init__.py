"""An offline Anthropic Message Batches API on loopback, spoken exactly as the official SDK expects.

Endpoints (any ``x-api-key`` is accepted):

* ``POST /v1/messages/batches`` · ``GET /v1/messages/batches`` (``limit`` 1-1000, ``before_id``,
  ``after_id``; newest first) · ``GET /v1/messages/batches/{id}`` ·
  ``POST /v1/messages/batches/{id}/cancel`` (400 once ended) · ``GET /v1/messages/batches/{id}/results``
  (``application/x-jsonl``, streamed; 400 until ended). Errors use the Anthropic envelope
  ``{"type": "error", "error": {"type", "message"}}``; unknown ids are 404 ``not_found_error``.

Answers are deterministic: a succeeded item echoes the text of its last user message (cut to
``max_tokens * 4`` characters, then ``stop_reason`` is ``max_tokens``), with usage of about one
token per four characters. Invalid ``params`` (no ``model``, ``max_tokens`` or ``messages``) error
the item with ``invalid_request_error`` when processed, as the real API does. The processing model
(timing, cancel, expiry) is described in :mod:`.state`.

Markers in the text of the last user message override an item's outcome (the first one wins):

* ``[sim:error]`` — errored with ``overloaded_error``
* ``[sim:error=TYPE]`` — errored with that error type, e.g. ``[sim:error=invalid_request_error]``
* ``[sim:expire]`` — expired
* ``[sim:lost]`` — counted as succeeded, but its line is missing from the results (a provider that
  loses a result)
* ``[sim:slow]`` — never finishes on its own: the batch stays ``in_progress`` until it is cancelled
  (the item becomes ``canceled``), expires, or is finished through the control endpoint (``expired``)

Prompt caching: the text up to the last content block (system or message) marked
``cache_control`` is the cached prefix (about one token per four characters). The first request
of a batch with that prefix and model reports it as ``cache_creation_input_tokens``, every later
one as ``cache_read_input_tokens``; ``input_tokens`` counts the rest of the prompt.

Without a marker, an item errors with ``overloaded_error`` when :func:`error_roll` of its
``custom_id`` (a hash, the same in every run) is below ``error_rate``.

Test controls, under ``/_simulator/``:

* ``GET stats`` → ``{"calls": {"create", "retrieve", "list", "cancel", "results": n},
  "by_batch": {batch_id: {"retrieve": n, "cancel": n, "results": n}}, "batches": n}``; a create
  counts once its body has arrived whole (a sender that dies mid-body made no create)
* ``POST faults`` queues faults, each used by one later call (``GET`` shows them, ``DELETE`` clears):
  ``{"<endpoint>_errors": [500, 529]}`` answers those statuses without acting;
  ``{"create_applied_errors": [500]}`` creates the batch, then answers the status;
  ``{"<endpoint>_delay_seconds": 5, "<endpoint>_delay_count": 1}`` acts, then holds the answer
  (a client timeout; a create is applied); ``{"results_cut_after_lines": 1, "results_cut_count": 1}``
  breaks the next results stream after that many lines. ``<endpoint>`` is one of ``create``,
  ``retrieve``, ``list``, ``cancel``, ``results``.
* ``GET|POST config`` — ``{"processing_seconds", "cancel_seconds", "error_rate", "expiry_seconds"}``;
  a change applies to batches created (cancelled, for ``cancel_seconds``) afterwards.
* ``POST batches/{id}/finish`` — end the batch now (see :mod:`.state`).
"""

from longops.providers.simulator.app import create_app
from longops.providers.simulator.server import build_app, run, run_in_thread, start_embedded
from longops.providers.simulator.state import SimConfig, SimulatorState, error_roll

__all__ = [
    "SimConfig",
    "SimulatorState",
    "build_app",
    "create_app",
    "error_roll",
    "run",
    "run_in_thread",
    "start_embedded",
]
