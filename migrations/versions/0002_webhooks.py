"""webhooks: per-job notify_url with its delivery state, per-user signing secret

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify_url", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("notify_status", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("notify_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("notify_next_at", sa.DateTime(timezone=True), nullable=True))
        # The dispatcher looks only for pending deliveries.
        batch_op.create_index("ix_jobs_notify_status", ["notify_status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_notify_status")
        batch_op.drop_column("notify_next_at")
        batch_op.drop_column("notify_attempts")
        batch_op.drop_column("notify_status")
        batch_op.drop_column("notify_url")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("webhook_secret")
