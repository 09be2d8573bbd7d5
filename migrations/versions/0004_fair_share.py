"""fair share: job priority, holds, preemptions and stored queue positions; user quotas; the
GPU-usage ledger

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gpu_usage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_key", sa.String(length=300), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_gpu_usage_user_started", "gpu_usage", ["user_id", "started_at"])
    op.create_index(op.f("ix_gpu_usage_job_id"), "gpu_usage", ["job_id"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.String(length=8), nullable=False, server_default="normal")
        )
        batch_op.add_column(
            sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("preemptions", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("preempt_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("queue_position", sa.Integer(), nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quota_gpu_seconds", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("quota_window_s", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("quota_window_s")
        batch_op.drop_column("quota_gpu_seconds")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("queue_position")
        batch_op.drop_column("preempt_requested")
        batch_op.drop_column("preemptions")
        batch_op.drop_column("held")
        batch_op.drop_column("priority")
    op.drop_index(op.f("ix_gpu_usage_job_id"), table_name="gpu_usage")
    op.drop_index("ix_gpu_usage_user_started", table_name="gpu_usage")
    op.drop_table("gpu_usage")
