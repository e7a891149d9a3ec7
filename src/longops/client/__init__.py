"""Python SDK for a longops server (DESIGN §5 "Python SDK"). Imports nothing server-side."""

from longops.client.async_ import AsyncClient
from longops.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IngestError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ValidationError,
    WaitTimeout,
)
from longops.client.sync import Client

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "IngestError",
    "InternalServerError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ValidationError",
    "WaitTimeout",
]
