"""Table definitions (SQLAlchemy Core). The Alembic migrations create exactly these.

Large payloads (request params, responses) are JSON *text*: they are written and served as they
arrive, never re-parsed on the hot paths (ingest, results streaming).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from longops.domain.usage import USAGE_FIELDS
from longops.store.types import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("job_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider", String(32)),
    Column("input", JSON),
    Column("endpoint", String(64)),  # a batch's provider endpoint (migration 0007), null for jobs
    Column("result", JSON),
    Column("error", JSON),
    Column("progress", JSON),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="1"),
    Column("metadata", JSON, nullable=False),
    Column("callback_url", Text),
    Column("callback_sent_at", UTCDateTime),
    Column("callback_status_code", Integer),
    Column("callback_error", Text),
    Column("callback_attempts", Integer, nullable=False, server_default="0"),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64)),
    Column("submission_started_at", UTCDateTime),
    Column("n_total", Integer, nullable=False, server_default="0"),
    Column("n_succeeded", Integer, nullable=False, server_default="0"),
    Column("n_errored", Integer, nullable=False, server_default="0"),
    Column("n_cancelled", Integer, nullable=False, server_default="0"),
    Column("n_expired", Integer, nullable=False, server_default="0"),
    Column("stop_reason", String(32)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
    Column("cancel_requested_at", UTCDateTime),
    # Generic jobs (migration 0004; see store/job_queue.py): the worker holding the job, the moment a
    # worker may next claim it (creation, lease expiry or retry time; NULL once it has ended or for
    # batches), and the time budget of one attempt.
    Column("lease_owner", String(255)),
    Column("due_at", UTCDateTime),
    Column("timeout_seconds", Float),
    Index("ix_jobs_org_id_id", "org_id", "id"),
    Index("ix_jobs_org_id_job_type_id", "org_id", "job_type", "id"),
    Index("ix_jobs_org_id_status_id", "org_id", "status", "id"),
    Index("ix_jobs_status_job_type", "status", "job_type"),
    Index(
        "uq_jobs_org_id_idempotency_key",
        "org_id",
        "idempotency_key",
        unique=True,
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index(
        "ix_jobs_due_at",
        "due_at",
        sqlite_where=text("due_at IS NOT NULL"),
        postgresql_where=text("due_at IS NOT NULL"),
    ),
    Index("ix_jobs_completed_at", "completed_at"),
)

provider_batches = Table(
    "provider_batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("provider", String(32), nullable=False),
    Column("provider_batch_id", String(255)),
    Column("status", String(16), nullable=False),
    Column("processing_status", String(32)),
    Column("request_count", Integer, nullable=False),
    Column("request_bytes", BigInteger, nullable=False),
    Column("first_seq", Integer, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("submit_attempts", Integer, nullable=False, server_default="0"),
    Column("submit_started_at", UTCDateTime),
    Column("submit_outcome_unknown", Integer, nullable=False, server_default="0"),
    Column("submitted_at", UTCDateTime),
    Column("next_action_at", UTCDateTime, nullable=False),
    Column("last_polled_at", UTCDateTime),
    Column("poll_errors", Integer, nullable=False, server_default="0"),
    Column("cancel_sent_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("error", JSON),
    # What the adapter staged at the provider for this submission (an uploaded input file), kept
    # until the batch is created or reconciled as never created (migration 0007).
    Column("staged", JSON),
    # 1: longops runs this provider batch itself (an emulated batch, migration 0009): never polled.
    Column("emulated", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_provider_batches_status_next_action_at", "status", "next_action_at"),
)

items = Table(
    "items",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("custom_id", String(64), nullable=False),
    Column("params", Text, nullable=False),
    Column("params_bytes", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider_batch_id", String(40)),
    Column("response", Text),
    Column("error", JSON),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Usage (migration 0008; see store/usage.py): NULL until the first result, then the sum over every
    # result written (attempts add up); ``model`` is the model the latest result named.
    Column("model", String(128)),
    *(Column(name, Integer) for name in USAGE_FIELDS),
    # Emulated batches only (migration 0009; see store/emulated.py): when the item may next be
    # claimed (pending: send time; running: lease end); NULL for other items and once final.
    Column("due_at", UTCDateTime),
    Index("uq_items_job_id_custom_id", "job_id", "custom_id", unique=True),
    Index("uq_items_job_id_seq", "job_id", "seq", unique=True),
    # No index on status (migration 0006): writing an item's result is then a HOT update, on the same
    # page (fillfactor 40 leaves the room). Open items are counted by the job's request counters.
    Index(
        "ix_items_due_at_id",
        "due_at",
        "id",
        sqlite_where=text("due_at IS NOT NULL"),
        postgresql_where=text("due_at IS NOT NULL"),
    ),
    postgresql_with={"fillfactor": 40},
)


leader_terms = Table(
    "leader_terms",
    metadata,
    Column("term", Integer, primary_key=True, autoincrement=True),
    Column("lock_name", String(255), nullable=False),
    Column("instance", String(255), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("released_at", UTCDateTime),
    Index("ix_leader_terms_lock_name_released_at", "lock_name", "released_at"),
)

files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("filename", String(255)),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("path", Text, nullable=False),  # relative to LONGOPS_FILES_DIR
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_files_org_id_id", "org_id", "id"),
    Index("ix_files_created_at", "created_at"),
)

# API keys (migration 0003; see store/api_keys.py): only a hash of each key is stored. Organizations are
# implicit: the name on a key is the org_id every query of its requests is scoped to.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Index("uq_api_keys_hash", "hash", unique=True),
)


# Usage summaries (migration 0008; see store/usage.py), added to when results are written, in the
# transaction that writes them: what a batch used per model, and what an organization used per
# provider, model and UTC day (what GET /v1/usage reads, never the items). Token sums are BIGINT.
batch_usage = Table(
    "batch_usage",
    metadata,
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in USAGE_FIELDS),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in USAGE_FIELDS),
)

# Dashboard sessions (migration 0010; see store/ui_sessions.py): a signed-in browser's cookie names a
# row by a random token, of which only the SHA-256 is stored; the row names the API key it was opened
# with, so a revoked key ends its sessions on the next request.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 hex of the cookie's token
    Column("key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_ui_sessions_expires_at", "expires_at"),
)
