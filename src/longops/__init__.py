"""longops: long-running operations and LLM batches, durably.

The names below are exported lazily (PEP 562): ``import longops.domain`` (or any other subpackage)
runs no more of the package than it needs, and ``longops.Client`` imports the SDK client on first use.
Each name of ``__all__`` is looked up in ``longops.handlers`` or ``longops.client``, once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from longops._version import __version__

if TYPE_CHECKING:
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

# The exports of ``longops.handlers``; every other lazy name comes from ``longops.client``.
_FROM_HANDLERS = frozenset({"Cancelled", "HandlerLoadError", "JobContext", "PermanentError", "handler"})


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'longops' has no attribute {name!r}")
    module = "longops.handlers" if name in _FROM_HANDLERS else "longops.client"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
