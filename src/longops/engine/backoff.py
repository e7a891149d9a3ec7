"""Delays between retries: exponential, capped, with jitter so many instances do not move in step."""

from __future__ import annotations

import random

# The longest wait before retrying a job's attempt or a webhook's delivery (before jitter).
RETRY_CAP_SECONDS = 3600.0


def exponential(attempt: int, *, base: float, cap: float, jitter: float = 0.2) -> float:
    """``base × 2^(attempt−1)`` capped at ``cap``, plus up to ``jitter`` (a fraction) of it."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    return float(delay * (1 + random.uniform(0, jitter)))


def with_jitter(interval: float, jitter_seconds: float) -> float:
    return interval + random.uniform(0, jitter_seconds)
