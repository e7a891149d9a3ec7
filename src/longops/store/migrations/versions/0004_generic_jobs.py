"""generic jobs: leases and due times on jobs, uploaded files

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import longops.store.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite adds nullable columns in place (ALTER TABLE … ADD COLUMN): no table rebuild needed.
    op.add_column("jobs", sa.Column("lease_owner", sa.String(length=255), nullable=True))
    op.add_column("jobs", sa.Column("due_at", longops.store.types.UTCDateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("timeout_seconds", sa.Float(), nullable=True))
    op.create_index(
        "ix_jobs_due_at",
        "jobs",
        ["due_at"],
        unique=False,
        sqlite_where=sa.text("due_at IS NOT NULL"),
        postgresql_where=sa.text("due_at IS NOT NULL"),
    )
    op.create_index("ix_jobs_completed_at", "jobs", ["completed_at"], unique=False)

    op.create_table(
        "files",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", longops.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    op.create_index("ix_files_org_id_id", "files", ["org_id", "id"], unique=False)
    op.create_index("ix_files_created_at", "files", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_files_created_at", table_name="files")
    op.drop_index("ix_files_org_id_id", table_name="files")
    op.drop_table("files")
    op.drop_index("ix_jobs_completed_at", table_name="jobs")
    op.drop_index(
        "ix_jobs_due_at",
        table_name="jobs",
        sqlite_where=sa.text("due_at IS NOT NULL"),
        postgresql_where=sa.text("due_at IS NOT NULL"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("timeout_seconds")
        batch_op.drop_column("due_at")
        batch_op.drop_column("lease_owner")
