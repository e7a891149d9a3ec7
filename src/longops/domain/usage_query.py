"""The query of ``GET /v1/usage``: which keys to group by, and which UTC days ``start``/``end`` cover. Pure.

Usage is recorded per UTC day, so a range selects whole days: every day that overlaps
``[start, end)``. A date ``end`` counts as its whole day (``start=2026-12-01&end=2026-12-31`` is all of
December); a time ``end`` excludes its day only when it is that day's midnight
(``end=2027-01-01T00:00:00Z`` is all of December too). A time without a zone is UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

GROUP_KEYS = ("provider", "model", "day")


class UsageQueryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


def parse_group_by(value: str | None) -> tuple[str, ...]:
    """``provider,model`` → the keys, in the order of :data:`GROUP_KEYS` (none: one total row)."""
    if value is None or not value.strip():
        return ()
    keys = [key.strip() for key in value.split(",")]
    for key in keys:
        if key not in GROUP_KEYS:
            raise UsageQueryError("group_by", f"unknown key {key!r}; use any of {', '.join(GROUP_KEYS)}")
    return tuple(key for key in GROUP_KEYS if key in keys)


def _parse(field: str, value: str) -> date | datetime:
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageQueryError(
            field, f"must be a date (YYYY-MM-DD) or an ISO 8601 time, got {value!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def day_range(start: str | None, end: str | None) -> tuple[date | None, date | None]:
    """The first and last UTC day (both included) that ``start`` and ``end`` select."""
    first = last = None
    if start is not None:
        parsed = _parse("start", start)
        first = parsed.date() if isinstance(parsed, datetime) else parsed
    if end is not None:
        parsed = _parse("end", end)
        if isinstance(parsed, datetime):
            midnight = parsed == datetime.combine(parsed.date(), datetime.min.time(), UTC)
            last = parsed.date() - timedelta(days=1) if midnight else parsed.date()
        else:
            last = parsed
    if first is not None and last is not None and first > last:
        raise UsageQueryError("end", f"selects no day at or after start ({start})")
    return first, last
