"""a batch's endpoint, and what a submission staged at the provider

Revision ID: 0007
Revises: 0006

* ``jobs.endpoint``: the provider endpoint every request of a batch is a body for
  (``/v1/messages`` for Anthropic-protocol providers; ``/v1/chat/completions``, ``/v1/responses``,
  ``/v1/embeddings`` or ``/v1/completions`` for OpenAI-family ones). Every batch stored before this
  revision ran on an Anthropic-protocol provider, so they get ``/v1/messages``.
* ``provider_batches.staged``: what an adapter put at the provider before creating the batch (the
  uploaded input file of an OpenAI batch), so a submission whose outcome is unknown can still
  delete it once reconciliation shows the batch was never created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("endpoint", sa.String(length=64), nullable=True))
    with op.batch_alter_table("provider_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("staged", sa.JSON(), nullable=True))
    op.execute("UPDATE jobs SET endpoint = '/v1/messages' WHERE job_type = 'llm_batch'")


def downgrade() -> None:
    with op.batch_alter_table("provider_batches", schema=None) as batch_op:
        batch_op.drop_column("staged")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("endpoint")
