"""Usage sums: per batch and model (``batch_usage``), per organization, UTC day, provider and model
(``usage_daily``), and the reads of both.

Invariants:

* Exactly once: the sums are added from what the ingest UPDATE changed (its ``RETURNING`` on
  PostgreSQL, the rows found open under SQLite's single writer), in the transaction that wrote the
  items; a result written again (a re-read stream, a replayed chunk) changes no item, so adds nothing.
* Additive: rows are upserted with ``+=``, so later attempts and rounds of an item add to them.
* Lock order: called after the job counters (:func:`~longops.store.transitions.add_item_counts`),
  and each statement upserts in key order, so every writer locks job rows before usage rows, and
  usage rows in the same order: two transactions cannot deadlock on them.
* ``GET /v1/usage`` reads ``usage_daily`` only (its primary key starts with the organization and
  day); it never scans items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Select, bindparam, func, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from longops.domain.usage import USAGE_FIELDS, Usage
from longops.store.tables import batch_usage, usage_daily


@dataclass(frozen=True, slots=True)
class UsageSum:
    """How many results reported usage, and the sum of it."""

    requests: int = 0
    usage: Usage = field(default_factory=Usage)

    def __add__(self, other: UsageSum) -> UsageSum:
        return UsageSum(self.requests + other.requests, self.usage + other.usage)


_NAMES = ", ".join(USAGE_FIELDS)
_ADD = ", ".join(f"{name} = {{table}}.{name} + excluded.{name}" for name in ("requests", *USAGE_FIELDS))
_PG_ADD_USAGE = text(
    f"""
    WITH d AS (
        SELECT * FROM unnest(CAST(:job_ids AS text[]), CAST(:models AS text[]), CAST(:requests AS bigint[]),
                             {", ".join(f"CAST(:{name} AS bigint[])" for name in USAGE_FIELDS)})
               AS d(job_id, model, requests, {_NAMES})
    ), per_batch AS (
        INSERT INTO batch_usage (job_id, model, requests, {_NAMES})
        SELECT job_id, model, requests, {_NAMES} FROM d ORDER BY job_id, model
        ON CONFLICT (job_id, model) DO UPDATE SET {_ADD.format(table="batch_usage")}
    )
    INSERT INTO usage_daily (org_id, day, provider, model, requests, {_NAMES})
    SELECT jobs.org_id, :day, jobs.provider, d.model, sum(d.requests),
           {", ".join(f"sum(d.{name})" for name in USAGE_FIELDS)}
    FROM d JOIN jobs ON jobs.id = d.job_id
    GROUP BY jobs.org_id, jobs.provider, d.model
    ORDER BY jobs.org_id, jobs.provider, d.model
    ON CONFLICT (org_id, day, provider, model) DO UPDATE SET {_ADD.format(table="usage_daily")}
    """
).bindparams(bindparam("day", type_=Date()))

_SQLITE_ADD_DAILY = text(
    f"""
    INSERT INTO usage_daily (org_id, day, provider, model, requests, {_NAMES})
    SELECT org_id, :day, provider, :model, :requests, {", ".join(f":{name}" for name in USAGE_FIELDS)}
    FROM jobs WHERE id = :job_id
    ON CONFLICT (org_id, day, provider, model) DO UPDATE SET {_ADD.format(table="usage_daily")}
    """
).bindparams(bindparam("day", type_=Date()))


async def add_usage(conn: AsyncConnection, usage: Mapping[tuple[str, str], UsageSum], now: datetime) -> None:
    """Add what one write counted (per (job id, model)) to the batch and daily sums (day of ``now``,
    UTC). One statement on PostgreSQL, two executemany on SQLite; none when nothing was counted."""
    rows = sorted(usage.items())
    if not rows:
        return
    day = now.date()
    if conn.dialect.name == "postgresql":
        await conn.execute(
            _PG_ADD_USAGE,
            {
                "day": day,
                "job_ids": [job_id for (job_id, _), _ in rows],
                "models": [model for (_, model), _ in rows],
                "requests": [total.requests for _, total in rows],
                **{name: [getattr(total.usage, name) for _, total in rows] for name in USAGE_FIELDS},
            },
        )
        return
    values = [
        {"job_id": job_id, "model": model, "requests": total.requests, **total.usage.as_dict()}
        for (job_id, model), total in rows
    ]
    upsert = sqlite_insert(batch_usage)
    await conn.execute(
        upsert.on_conflict_do_update(
            index_elements=[batch_usage.c.job_id, batch_usage.c.model],
            set_={name: batch_usage.c[name] + upsert.excluded[name] for name in ("requests", *USAGE_FIELDS)},
        ),
        values,
    )
    await conn.execute(_SQLITE_ADD_DAILY, [{**row, "day": day} for row in values])


def _usage_of(row: Mapping[Any, Any]) -> Usage:
    return Usage(*(int(row[name]) for name in USAGE_FIELDS))


def usage_sum_of(row: Mapping[Any, Any]) -> UsageSum:
    """A ``batch_usage`` or ``usage_daily`` row's (or sums') requests and tokens."""
    return UsageSum(int(row["requests"]), _usage_of(row))


async def batch_usage_by_model(
    conn: AsyncConnection, job_ids: Sequence[str]
) -> dict[str, dict[str, UsageSum]]:
    """Per job, its usage by model (jobs without any are absent)."""
    if not job_ids:
        return {}
    rows = (await conn.execute(select(batch_usage).where(batch_usage.c.job_id.in_(list(job_ids))))).mappings()
    found: dict[str, dict[str, UsageSum]] = {}
    for row in rows:
        found.setdefault(row["job_id"], {})[row["model"]] = usage_sum_of(row)
    return found


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One provider and model's usage, on one day (or over the range, when not grouped by day)."""

    provider: str
    model: str
    day: date | None
    total: UsageSum


def daily_usage_query(
    org_id: str, *, first_day: date | None, last_day: date | None, by_day: bool
) -> Select[Any]:
    """The statement of :func:`daily_usage` (``bench/usage.py`` shows its plan)."""
    keys = [usage_daily.c.provider, usage_daily.c.model, *([usage_daily.c.day] if by_day else [])]
    query = (
        select(
            *keys,
            func.sum(usage_daily.c.requests).label("requests"),
            *(func.sum(usage_daily.c[name]).label(name) for name in USAGE_FIELDS),
        )
        .where(usage_daily.c.org_id == org_id)
        .group_by(*keys)
        .order_by(*keys)
    )
    if first_day is not None:
        query = query.where(usage_daily.c.day >= first_day)
    if last_day is not None:
        query = query.where(usage_daily.c.day <= last_day)
    return query


async def daily_usage(
    conn: AsyncConnection, org_id: str, *, first_day: date | None, last_day: date | None, by_day: bool
) -> list[DailyUsage]:
    """The organization's usage per provider and model (and day, if ``by_day``) between these days,
    both included: one range read of ``usage_daily``'s primary key (``org_id``, ``day``)."""
    query = daily_usage_query(org_id, first_day=first_day, last_day=last_day, by_day=by_day)
    rows = (await conn.execute(query)).mappings()
    return [
        DailyUsage(
            row["provider"],
            row["model"],
            row["day"] if by_day else None,
            usage_sum_of(row),
        )
        for row in rows
    ]
