"""workers and estimates: the workers table, and each job's estimate, forecast and speed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=8), nullable=False),
        sa.Column("gpu_name", sa.String(length=200), nullable=True),
        sa.Column("gpu_uuid", sa.String(length=100), nullable=True),
        sa.Column("total_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("free_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("compute_capability", sa.String(length=16), nullable=True),
        sa.Column("torch_version", sa.String(length=64), nullable=True),
        sa.Column("cuda_version", sa.String(length=32), nullable=True),
        sa.Column("driver_version", sa.String(length=64), nullable=True),
        sa.Column("peak_flops", sa.Double(), nullable=True),
        sa.Column("peak_source", sa.String(length=16), nullable=True),
        sa.Column("efficiency", sa.Double(), nullable=False),
        sa.Column("allowances_s", sa.JSON(), nullable=False),
        sa.Column("observations", sa.JSON(), nullable=False),
        sa.Column("runs_learned", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("current_job_id", sa.String(length=32), nullable=True),
        sa.Column("process", sa.String(length=200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("estimate", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("blocked_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("estimated_start_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("estimated_finish_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("measured_s_per_step", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("measured_s_per_step")
        batch_op.drop_column("estimated_finish_at")
        batch_op.drop_column("estimated_start_at")
        batch_op.drop_column("blocked_reason")
        batch_op.drop_column("estimate")
    op.drop_table("workers")
