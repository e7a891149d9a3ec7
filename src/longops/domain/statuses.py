"""Job, item and provider-batch statuses and the job transition table (DESIGN §2).

Every status write in the store is a compare-and-set built from :func:`allowed_from`, so the
table here is the single source of truth for which writes may win.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.CREATED: frozenset(
        {JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.PENDING: frozenset(
        {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.EXPIRED: frozenset(),
}


class InvalidTransition(Exception):
    """A status change the lifecycle forbids (surfaced as HTTP 409 ``invalid_transition``)."""

    def __init__(self, current: JobStatus | str, target: JobStatus | str, what: str = "job") -> None:
        super().__init__(f"{what} is {current}; it cannot become {target}")
        self.current = current
        self.target = target


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in JOB_TRANSITIONS[current]


def allowed_from(target: JobStatus) -> frozenset[JobStatus]:
    """The statuses a job may be in for a compare-and-set to ``target`` to succeed."""
    return frozenset(source for source, targets in JOB_TRANSITIONS.items() if target in targets)


class ItemStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


FINAL_ITEM_STATUSES: frozenset[ItemStatus] = frozenset(
    {ItemStatus.SUCCEEDED, ItemStatus.ERRORED, ItemStatus.CANCELLED, ItemStatus.EXPIRED}
)


class ProviderBatchStatus(StrEnum):
    """Our view of one submission to a provider."""

    CREATED = "created"  # intent recorded, not yet accepted by the provider
    RUNNING = "running"
    COMPLETED = "completed"  # ended and every result ingested
    FAILED = "failed"  # rejected, or the submission outcome could not be established

    @property
    def is_terminal(self) -> bool:
        return self in (ProviderBatchStatus.COMPLETED, ProviderBatchStatus.FAILED)


class StopReason(StrEnum):
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    MAX_ATTEMPTS = "max_attempts"
    HANDLER_ERROR = "handler_error"
    PROVIDER_ERROR = "provider_error"
    EXPIRED = "expired"
    SUBMISSION_UNKNOWN = "submission_unknown"
