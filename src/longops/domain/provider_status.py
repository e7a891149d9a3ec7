"""Mapping of each provider's own batch status words to ours (DESIGN §2).

An intermediate state (``canceling``, ``finalizing``, ...) is never terminal: only ``ENDED`` leads to
fetching results, and only ``FAILED`` ends a provider batch without results.
"""

from __future__ import annotations

from enum import StrEnum

from longops.domain.statuses import ItemStatus


class ProviderPhase(StrEnum):
    RUNNING = "running"
    ENDED = "ended"
    FAILED = "failed"


class UnknownProviderStatus(ValueError):
    pass


_ANTHROPIC: dict[str, ProviderPhase] = {
    "in_progress": ProviderPhase.RUNNING,
    "canceling": ProviderPhase.RUNNING,
    "ended": ProviderPhase.ENDED,
}

_OPENAI: dict[str, ProviderPhase] = {
    "validating": ProviderPhase.RUNNING,
    "in_progress": ProviderPhase.RUNNING,
    "finalizing": ProviderPhase.RUNNING,
    "cancelling": ProviderPhase.RUNNING,
    "completed": ProviderPhase.ENDED,
    "expired": ProviderPhase.ENDED,
    "cancelled": ProviderPhase.ENDED,
    "failed": ProviderPhase.FAILED,
}


def anthropic_phase(processing_status: str) -> ProviderPhase:
    try:
        return _ANTHROPIC[processing_status]
    except KeyError:
        raise UnknownProviderStatus(f"unknown Anthropic processing_status {processing_status!r}") from None


def openai_phase(status: str) -> ProviderPhase:
    try:
        return _OPENAI[status]
    except KeyError:
        raise UnknownProviderStatus(f"unknown OpenAI batch status {status!r}") from None


_ANTHROPIC_RESULT_TYPES: dict[str, ItemStatus] = {
    "succeeded": ItemStatus.SUCCEEDED,
    "errored": ItemStatus.ERRORED,
    "canceled": ItemStatus.CANCELLED,
    "cancelled": ItemStatus.CANCELLED,
    "expired": ItemStatus.EXPIRED,
}


def anthropic_item_status(result_type: str) -> ItemStatus:
    """Anthropic's per-request ``result.type`` as our item status (``canceled`` → ``cancelled``)."""
    try:
        return _ANTHROPIC_RESULT_TYPES[result_type]
    except KeyError:
        raise UnknownProviderStatus(f"unknown Anthropic result type {result_type!r}") from None
