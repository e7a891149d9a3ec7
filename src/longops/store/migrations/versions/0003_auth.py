"""auth: API keys, stored as hashes, each bound to an organization

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import longops.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", longops.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", longops.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_index("uq_api_keys_hash", "api_keys", ["hash"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_api_keys_hash", table_name="api_keys")
    op.drop_table("api_keys")
