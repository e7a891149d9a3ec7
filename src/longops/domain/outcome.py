"""How a batch ends, from its item-level truth (DESIGN §2)."""

from __future__ import annotations

from dataclasses import dataclass

from longops.domain.schemas import RequestCounts
from longops.domain.statuses import JobStatus, StopReason


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    status: JobStatus
    stop_reason: StopReason | None


def batch_outcome(
    counts: RequestCounts, *, cancel_requested: bool, any_provider_batch_failed: bool
) -> BatchOutcome:
    """The terminal status of a batch whose provider batches have all ended and items are all final.

    ``cancelled`` if a cancel was requested, else ``completed`` if at least one item succeeded, else
    ``expired`` if items expired, else ``failed``.
    """
    if cancel_requested:
        return BatchOutcome(JobStatus.CANCELLED, StopReason.CANCELLED)
    if counts.succeeded > 0:
        return BatchOutcome(JobStatus.COMPLETED, None)
    if counts.expired > 0:
        return BatchOutcome(JobStatus.EXPIRED, StopReason.EXPIRED)
    return BatchOutcome(
        JobStatus.FAILED,
        StopReason.PROVIDER_ERROR if any_provider_batch_failed or counts.errored else None,
    )
