"""dashboard sessions

Revision ID: 0010
Revises: 0006

``ui_sessions``: one row per signed-in browser of the dashboard (``/ui/``). The cookie holds a random
token; the row's id is its SHA-256, so the database never holds what the cookie holds. Each row names
the API key it was opened with (the organization comes from the key, read on every request, so
revoking the key ends the session) and the session's CSRF token.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from longops.store.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_ui_sessions_key_id_api_keys", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ui_sessions"),
    )
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_expires_at", table_name="ui_sessions")
    op.drop_table("ui_sessions")
