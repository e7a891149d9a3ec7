"""One item's outcome as a provider reported it, before it is stored: the provider-neutral result.

Every adapter turns its provider's result lines into these; the store writes them (idempotently, by
``(job_id, custom_id)``). A line an adapter cannot read is never raised: it becomes the error of the
item it names (:func:`unreadable_result`), or an :class:`UnreadableLine` when it names none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longops.domain.statuses import ItemStatus
from longops.domain.usage import Usage


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """One item's outcome. ``response_json``/``error`` are ready to store (JSON text / small dict).

    ``usage`` (normalized with :func:`longops.domain.usage.usage_of_response`) and ``model`` (the
    model the response names) are what this result is counted and priced as; None where the
    result reports none (e.g. an errored request)."""

    custom_id: str
    status: ItemStatus
    response_json: str | None
    error: dict[str, Any] | None
    usage: Usage | None = None
    model: str | None = None


INVALID_RESULTS_LINE = "invalid_results_line"


def unreadable_result(custom_id: str, reason: str) -> ProviderResult:
    """The outcome of an item whose results line could not be read: errored, saying why."""
    return ProviderResult(
        custom_id,
        ItemStatus.ERRORED,
        None,
        {"type": INVALID_RESULTS_LINE, "message": f"the provider's results line was unreadable: {reason}"},
    )


@dataclass(frozen=True, slots=True)
class UnreadableLine:
    """A results line that could not be read and names no item: counted and logged, never stored."""

    reason: str
