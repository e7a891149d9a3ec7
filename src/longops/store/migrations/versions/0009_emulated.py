"""emulated batches: items due to be sent by longops itself, and provider batches it runs

Revision ID: 0009
Revises: 0007

* ``items.due_at``: for an item of an emulated batch (``openai_compatible``), the moment an
  instance may next claim it: when it is pending, the time it may be sent (planning, or a retry's
  backoff); when it is running, the end of the claiming instance's lease (then it is due again, so
  a dead instance's claims come back). NULL for every other item, and once the item is final.
  Indexed only where it is set, with the item id (``ix_items_due_at_id``: claims walk it from a
  cursor, so the dead entries claimed and finished items leave behind until a vacuum are not
  walked again by every claim). Native ingestion never writes ``due_at``, so its updates stay
  heap-only (HOT) on PostgreSQL.
* ``provider_batches.emulated``: 1 for a provider batch that longops runs itself (never polled at a
  provider), 0 otherwise.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import longops.store.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_SET = sa.text("due_at IS NOT NULL")


def upgrade() -> None:
    op.add_column("items", sa.Column("due_at", longops.store.types.UTCDateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_items_due_at_id",
        "items",
        ["due_at", "id"],
        unique=False,
        sqlite_where=_SET,
        postgresql_where=_SET,
    )
    op.add_column("provider_batches", sa.Column("emulated", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("provider_batches", schema=None) as batch_op:
        batch_op.drop_column("emulated")
    op.drop_index("ix_items_due_at_id", table_name="items", sqlite_where=_SET, postgresql_where=_SET)
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_column("due_at")
