"""What every adapter's results parser shares: strict JSON, and what a line it cannot read becomes.

Invariants (for every provider's results lines):

* Only strict RFC 8259 JSON with finite numbers is stored, so every ``/results`` line the API serves
  is strict JSON: ``NaN``, ``Infinity`` and ``1e400`` (read as infinity by ``json``) are unreadable.
* A line that cannot be read never breaks the stream: it errors the item it names
  (``invalid_results_line``, :func:`~longops.providers.base.unreadable_result`), or, when no
  ``custom_id`` can be found in it, becomes an :class:`~longops.providers.base.UnreadableLine` that
  the engine counts and logs (:func:`unreadable_line`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from longops.domain.results import ProviderResult, UnreadableLine, unreadable_result

# A custom_id named anywhere in a line that is otherwise unreadable.
_NAMED_ID = re.compile(rb'"custom_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is beyond the range of a double")
    return value


def strict_loads(raw: bytes | str) -> Any:
    """RFC 8259 JSON with finite numbers only: ``json`` alone would accept ``NaN``, ``Infinity`` and
    ``1e400`` (read as infinity), which no strict reader, nor the API's own JSON answers, takes back."""
    return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)


def fast_loads(raw: bytes) -> Any:
    """:func:`strict_loads`, through orjson first (which is strict, but refuses integers beyond
    64 bits, which JSON allows: those take the ``json`` path)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return strict_loads(raw)


def valid_json(raw: bytes) -> bool:
    """Whether ``raw`` is exactly one strict JSON value."""
    try:
        fast_loads(raw)
        return True
    except (ValueError, RecursionError):
        return False


def unreadable_line(raw: bytes, exc: BaseException) -> ProviderResult | UnreadableLine:
    """What a line that could not be read becomes (see the module docstring)."""
    reason = f"{type(exc).__name__}: {str(exc)[:200]}; line starts {raw[:120]!r}"
    named = _NAMED_ID.search(raw)
    if named is None:
        return UnreadableLine(reason)
    return unreadable_result(named.group(1).decode(), reason)
