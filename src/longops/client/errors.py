"""Exceptions raised by the SDK.

Every failure to get an answer from the service is an :class:`APIError`: the server's error envelope
``{"error": {"type", "message"}}`` becomes a subclass chosen by HTTP status, and transport problems become
:class:`APIConnectionError` (``status_code`` is ``None`` there). :class:`WaitTimeout` is separate: the
service answered fine, the job just did not finish in time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from longops.domain.schemas import Batch, Job


class APIError(Exception):
    """A request to the longops service failed; ``type`` is the error ``type`` of the envelope."""

    def __init__(self, message: str, *, type: str, status_code: int | None = None) -> None:
        super().__init__(f"{type}: {message}")
        self.message = message
        self.type = type
        self.status_code = status_code


class BadRequestError(APIError):
    """400 ``invalid_request``: the body is not valid JSON or not an object."""


class AuthenticationError(APIError):
    """401 ``authentication_error``: missing, malformed or revoked API key."""


class NotFoundError(APIError):
    """404 ``not_found``: unknown id, or another organization's id."""


class ConflictError(APIError):
    """409 ``invalid_transition`` (the job's state forbids it) or ``idempotency_conflict``."""


class PayloadTooLargeError(APIError):
    """413 ``payload_too_large``."""


class ValidationError(APIError):
    """422 ``validation_error``: the message names the offending field."""


class RateLimitError(APIError):
    """429 ``rate_limited``."""


class InternalServerError(APIError):
    """Any 5xx answer."""


class IngestError(APIError):
    """A ``batch_ingest`` job (``client.batches.create_from_file``) ended without creating its batch.

    ``type`` and ``message`` are the job's ``error``: for a bad line ``validation_error`` and a message
    that starts with ``line N``, N being ``line`` (``None`` for other failures). ``job`` is the job as
    it ended; ``status_code`` is ``None`` (the calls themselves succeeded).
    """

    def __init__(self, message: str, *, type: str, job: Job, line: int | None = None) -> None:
        super().__init__(message, type=type)
        self.job = job
        self.line = line


class APIConnectionError(APIError):
    """No HTTP answer: connection refused or dropped, DNS failure, protocol error."""

    def __init__(self, message: str, *, type: str = "connection_error") -> None:
        super().__init__(message, type=type)


class APITimeoutError(APIConnectionError):
    """The service did not answer within the client's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="timeout")


class WaitTimeout(TimeoutError):
    """``wait()`` gave up before the job reached a terminal status; ``last`` is the last state seen."""

    def __init__(self, last: Batch | Job, timeout: float) -> None:
        super().__init__(f"{last.object} {last.id} is still {last.status} after {timeout:g}s")
        self.last = last
        self.timeout = timeout
