"""Webhook outbox tables (on the shared ``metadata``; migration 0002 creates exactly these).

``webhook_events`` holds one row per job that ended with a ``callback_url``: written in the same
transaction as the terminal transition (so it cannot be lost), then driven by the dispatcher.

* ``state``: ``pending`` (due at ``next_attempt_at``), ``delivered`` (a 2xx), ``failed`` (attempt
  budget spent), ``gone`` (the receiver answered 410). Only ``pending`` rows are ever sent.
* ``attempts`` numbers attempts over the event's whole life (redeliveries continue the count);
  ``budget_base`` is the value ``attempts`` had when the current budget started (0, or the count at
  the last redelivery), so the current budget has used ``attempts - budget_base`` attempts.
* ``claimed_until`` is a sender's lease: a claimed row is not claimed again before it passes, so a
  sender that dies mid-attempt delays the event by one lease, never loses it.
* ``payload`` is the exact request body, fixed at the first attempt and sent unchanged on every
  retry and redelivery.

``webhook_deliveries`` has one row per attempt, keyed by ``(event_id, attempt)``: inserted when the
attempt is claimed, completed (``status_code``, ``error``, ``duration_ms``) when its outcome is known.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

from longops.store.tables import metadata
from longops.store.types import UTCDateTime

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("budget_base", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime),
    Column("claimed_until", UTCDateTime),
    Column("payload", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("uq_webhook_events_job_id", "job_id", unique=True),
    Index("ix_webhook_events_state_next_attempt_at", "state", "next_attempt_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column(
        "event_id",
        String(40),
        ForeignKey("webhook_events.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("attempt", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer),
)
