"""usage and cost: token counts on items, per batch and model, per organization and day

Revision ID: 0008
Revises: 0006

* ``items``: ``model`` and the five usage counts (nullable: NULL until the item's first result). On
  PostgreSQL adding nullable columns rewrites nothing, and none is indexed, so writing a result stays
  a HOT update.
* ``batch_usage`` (job, model) and ``usage_daily`` (organization, UTC day, provider, model): sums
  added to in the transaction that writes the results, from the rows that write changed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_USAGE = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)


def _sums() -> list[sa.Column[int]]:
    return [sa.Column("requests", sa.BigInteger(), nullable=False)] + [
        sa.Column(name, sa.BigInteger(), nullable=False) for name in _USAGE
    ]


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model", sa.String(length=128), nullable=True))
        for name in _USAGE:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
    op.create_table(
        "batch_usage",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        *_sums(),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_batch_usage_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "model", name=op.f("pk_batch_usage")),
    )
    op.create_table(
        "usage_daily",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        *_sums(),
        sa.PrimaryKeyConstraint("org_id", "day", "provider", "model", name=op.f("pk_usage_daily")),
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
    op.drop_table("batch_usage")
    with op.batch_alter_table("items", schema=None) as batch_op:
        for name in reversed(_USAGE):
            batch_op.drop_column(name)
        batch_op.drop_column("model")
