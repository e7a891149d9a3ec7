"""items are updated in place: room on each page, and no index on status

Revision ID: 0006
Revises: 0005

An item row is written three times after its insert: the provider batch it belongs to, ``running``
when that batch is submitted, and its result (which about doubles the row). On PostgreSQL each of
these was an update that wrote the row anew on another page and inserted into every index (no HOT
update was possible: ``status`` is in the predicate of ``ix_items_job_id_seq_open``, and the pages
had no room). Measured on the development machine, per 1,000 results of about 1 kB: 30 ms of server
CPU and 3.3 kB of WAL per row before, 21 ms and 1.8 kB after.

* ``ix_items_job_id_seq_open`` is dropped: nothing indexes ``status`` any more, so every update of an
  item is a heap-only tuple (HOT) update with no index insert. "Is anything still open?" is answered
  by the job's exact request counters, and a provider batch's open items are found by its ``seq``
  range through ``uq_items_job_id_seq``.
* PostgreSQL: ``fillfactor = 40`` on ``items``, so a page keeps room for the new versions of its rows
  (a row about doubles when its result is written). The space is not lost: a page holds as many
  items with results as it did before, once their results are in. It applies to pages written from
  now on; existing pages are not rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OPEN = sa.text("status IN ('pending', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_job_id_seq_open", sqlite_where=_OPEN, postgresql_where=_OPEN)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE items SET (fillfactor = 40)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE items RESET (fillfactor)")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_items_job_id_seq_open",
            ["job_id", "seq"],
            unique=False,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )
