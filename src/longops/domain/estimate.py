"""The estimate of a batch before it runs (``POST /v1/batches/estimate``, ``longops estimate``). Pure.

Method, per request (documented in ``docs/cost.md``):

* estimated input tokens = ⌈characters / 4⌉, counting the characters of every string value inside the
  request's ``system``, ``messages``, ``tools``, ``input``, ``prompt`` and ``instructions`` (the
  common rule of thumb of about four characters per token for English text; no tokenizer is bundled);
* max output tokens = its ``max_tokens`` (Anthropic, chat completions), ``max_completion_tokens`` or
  ``max_output_tokens`` (Responses); 0 when it sets none (then it is not bounded, and ``high`` is
  not a bound for it).

``low`` prices the input estimate alone, ``high`` adds every request's maximum output, both at the
prices of the batch's provider and basis (the batch discount for native batches), with no cache
reads assumed. Models without a price are left out of both and listed in ``unpriced_models``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from longops.domain.prices import Basis, PriceTable
from longops.domain.requests import BatchRequest
from longops.domain.usage import Usage

_TEXT_FIELDS = ("system", "messages", "tools", "input", "prompt", "instructions")
_MAX_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Estimate:
    requests: int
    estimated_input_tokens: int
    max_output_tokens: int
    low: Decimal
    high: Decimal
    basis: Basis
    unpriced_models: tuple[str, ...]


def _characters(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_characters(v) for v in value.values())
    if isinstance(value, list):
        return sum(_characters(v) for v in value)
    return 0


def input_tokens_of(params: dict[str, Any]) -> int:
    chars = sum(_characters(params.get(name)) for name in _TEXT_FIELDS)
    return math.ceil(chars / CHARS_PER_TOKEN)


def max_output_of(params: dict[str, Any]) -> int:
    for name in _MAX_OUTPUT_FIELDS:
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def estimate_batch(
    requests: Iterable[BatchRequest], table: PriceTable, provider: str, protocol: str, basis: Basis
) -> Estimate:
    count = input_total = output_total = 0
    low = high = Decimal(0)
    unpriced: set[str] = set()
    for request in requests:
        params = json.loads(request.params_json)
        model = params.get("model") if isinstance(params.get("model"), str) else ""
        input_tokens, max_output = input_tokens_of(params), max_output_of(params)
        count += 1
        input_total += input_tokens
        output_total += max_output
        if not model:  # the provider refuses a request without a model: it costs nothing
            continue
        row = table.find(provider, protocol, model)
        if row is None:
            unpriced.add(model)
            continue
        low += row.cost(Usage(input_tokens=input_tokens), basis)
        high += row.cost(Usage(input_tokens=input_tokens, output_tokens=max_output), basis)
    return Estimate(count, input_total, output_total, low, high, basis, tuple(sorted(unpriced)))
