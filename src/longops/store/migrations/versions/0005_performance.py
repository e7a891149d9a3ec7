"""performance: an index of open items instead of (provider_batch_id, status); lz4 for large text

Revision ID: 0005
Revises: 0004

* ``ix_items_provider_batch_id_status`` is replaced by ``ix_items_job_id_seq_open``, a partial index
  on ``(job_id, seq)`` of the items still open (``pending``/``running``). The queries that used the
  old one find a provider batch's items by its ``seq`` range, or a job's open items, through the new
  one. A result written into an item leaves the partial index, so ingestion maintains three indexes
  per row instead of four (an UPDATE that moves a row to another page inserts into every index whose
  predicate the new row satisfies), and "is anything still open?" is answered from a small index.
* PostgreSQL (14 and later, built with lz4): ``params`` and ``response`` are compressed with lz4
  instead of pglz when a row outgrows 2 kB; pglz took a fifth of an ingest chunk's time here.
  Values already stored keep their compression; nothing is rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_OPEN = sa.text("status IN ('pending', 'running')")


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    row = bind.execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    ).first()
    return row is not None and "lz4" in row[0]


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_provider_batch_id_status")
        batch_op.create_index(
            "ix_items_job_id_seq_open",
            ["job_id", "seq"],
            unique=False,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )
    if _lz4_available():
        op.execute("ALTER TABLE items ALTER COLUMN params SET COMPRESSION lz4")
        op.execute("ALTER TABLE items ALTER COLUMN response SET COMPRESSION lz4")


def downgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE items ALTER COLUMN params SET COMPRESSION default")
        op.execute("ALTER TABLE items ALTER COLUMN response SET COMPRESSION default")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_job_id_seq_open", sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.create_index(
            "ix_items_provider_batch_id_status", ["provider_batch_id", "status"], unique=False
        )
