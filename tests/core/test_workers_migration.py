"""Migrations 0003 (the workers table and the jobs' estimate columns) and 0004 (fair share) run
down and up on SQLite and Postgres, and leave the schema core/db/tables.py describes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core.db.migrate import downgrade, upgrade
from core.db.tables import Base

JOB_COLUMNS = {"estimate", "blocked_reason", "estimated_start_at", "estimated_finish_at",
               "measured_s_per_step"}  # fmt: skip


FAIR_SHARE_JOB_COLUMNS = {"priority", "held", "preemptions", "preempt_requested",
                          "queue_position"}  # fmt: skip


def _columns(inspector: Any, table: str) -> set[str]:
    return {c["name"] for c in inspector.get_columns(table)}


def _before_0003(inspector: Any) -> None:
    assert "workers" not in inspector.get_table_names()
    assert not JOB_COLUMNS & _columns(inspector, "jobs")


def _before_0004(inspector: Any) -> None:
    """The fair-share migration: the usage ledger, the jobs' scheduling columns, the users'
    quotas."""
    assert "gpu_usage" not in inspector.get_table_names()
    assert not FAIR_SHARE_JOB_COLUMNS & _columns(inspector, "jobs")
    assert "quota_gpu_seconds" not in _columns(inspector, "users")


@pytest.mark.parametrize(("down_to", "absent"), [("0002", _before_0003), ("0003", _before_0004)])
def test_a_migration_runs_down_and_up_and_matches_the_tables(
    tmp_path, postgres_url, down_to: str, absent: Callable[[Any], None]
):
    """Down to ``down_to`` and up again, on SQLite and Postgres: what the revision adds is
    gone, then the schema is the one core/db/tables.py describes."""
    for url in (f"sqlite:///{tmp_path / 'm.db'}", postgres_url):
        upgrade(url)
        downgrade(url, down_to)
        engine = sa.create_engine(url)
        absent(sa.inspect(engine))
        engine.dispose()
        upgrade(url)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        engine.dispose()
        assert differences == [], (url, differences)
