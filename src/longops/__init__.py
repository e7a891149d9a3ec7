"""longops: long-running operations and LLM batches, durably."""

from longops._version import __version__
from longops.client import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    IngestError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ValidationError,
    WaitTimeout,
)
from longops.handlers import Cancelled, HandlerLoadError, JobContext, PermanentError, handler

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Cancelled",
    "Client",
    "ConflictError",
    "HandlerLoadError",
    "IngestError",
    "InternalServerError",
    "JobContext",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermanentError",
    "RateLimitError",
    "ValidationError",
    "WaitTimeout",
    "__version__",
    "handler",
]
