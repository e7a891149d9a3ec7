"""Token usage of one result, normalized across provider response shapes (DESIGN §10). Pure.

Every shape maps to the same five counts, so that cost is one formula whatever the provider:

* ``input_tokens`` — input neither read from nor written to a cache;
* ``output_tokens`` — all output, reasoning included;
* ``cache_read_input_tokens`` / ``cache_creation_input_tokens`` — input read from / written to a cache;
* ``reasoning_tokens`` — the part of ``output_tokens`` that was reasoning: shown, never charged twice.

Shapes, recognized by their fields (a count the provider does not report is 0):

=====================  ==========================================================================
Anthropic message      ``usage.input_tokens``, ``output_tokens``, ``cache_read_input_tokens``,
                       ``cache_creation_input_tokens`` (already disjoint; reasoning not reported)
OpenAI chat / legacy   ``usage.prompt_tokens`` − ``prompt_tokens_details.cached_tokens`` = input;
completions            ``completion_tokens`` = output; ``completion_tokens_details.reasoning_tokens``
OpenAI Responses       ``usage.input_tokens`` − ``input_tokens_details.cached_tokens`` = input;
                       ``output_tokens``; ``output_tokens_details.reasoning_tokens``
OpenAI embeddings      ``usage.prompt_tokens`` = input (no ``completion_tokens``)
=====================  ==========================================================================

Responses and Anthropic both say ``input_tokens``; a Responses body is told apart by its
``object: "response"`` or by the ``*_details`` / ``total_tokens`` fields Anthropic never sends.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 0.5 µs more per result to create
class Usage:
    """Never mutated: treat as a value."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    # Spelled out: dataclasses.fields() on every call was most of the CPU of GET /v1/usage.
    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
ZERO = Usage()


def _count(container: Any, name: str) -> int:
    """A non-negative integer count, or 0 where the provider sent none (or something else)."""
    if type(container) is not dict:  # decoded JSON; not isinstance(Mapping): 10x slower per result
        return 0
    value = container.get(name)
    if type(value) is not int or value < 0:  # bool is not int here, as intended
        return 0
    return value


def usage_of_response(body: Any) -> Usage | None:
    """The usage of one decoded response body (see the module docstring), or None if it reports none."""
    usage = body.get("usage") if type(body) is dict else None
    if type(usage) is not dict:
        return None
    if "prompt_tokens" in usage:  # chat completions, legacy completions, embeddings
        cached = _count(usage.get("prompt_tokens_details"), "cached_tokens")
        return Usage(
            input_tokens=max(_count(usage, "prompt_tokens") - cached, 0),
            output_tokens=_count(usage, "completion_tokens"),
            cache_read_input_tokens=cached,
            reasoning_tokens=_count(usage.get("completion_tokens_details"), "reasoning_tokens"),
        )
    if "input_tokens" not in usage and "output_tokens" not in usage:
        return None
    if (
        body.get("object") == "response"
        or "input_tokens_details" in usage
        or "output_tokens_details" in usage
        or "total_tokens" in usage
    ):
        cached = _count(usage.get("input_tokens_details"), "cached_tokens")
        return Usage(
            input_tokens=max(_count(usage, "input_tokens") - cached, 0),
            output_tokens=_count(usage, "output_tokens"),
            cache_read_input_tokens=cached,
            reasoning_tokens=_count(usage.get("output_tokens_details"), "reasoning_tokens"),
        )
    return Usage(
        _count(usage, "input_tokens"),
        _count(usage, "output_tokens"),
        _count(usage, "cache_read_input_tokens"),
        _count(usage, "cache_creation_input_tokens"),
    )


def model_of_response(body: Any) -> str | None:
    """The model a response says answered it (what was billed), if it says."""
    model = body.get("model") if type(body) is dict else None
    return model[:128] if type(model) is str and model else None
