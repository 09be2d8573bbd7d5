"""Migration 0003 (the workers table and the jobs' estimate columns) runs down and up on SQLite
and Postgres, and leaves the schema core/db/tables.py describes."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core.db.migrate import downgrade, upgrade
from core.db.tables import Base

JOB_COLUMNS = {"estimate", "blocked_reason", "estimated_start_at", "estimated_finish_at",
               "measured_s_per_step"}  # fmt: skip


def test_0003_runs_down_and_up_and_matches_the_tables(tmp_path, postgres_url):
    for url in (f"sqlite:///{tmp_path / 'm.db'}", postgres_url):
        upgrade(url)
        downgrade(url, "0002")
        engine = sa.create_engine(url)
        inspector = sa.inspect(engine)
        assert "workers" not in inspector.get_table_names()
        assert not JOB_COLUMNS & {c["name"] for c in inspector.get_columns("jobs")}
        engine.dispose()
        upgrade(url)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        engine.dispose()
        assert differences == [], (url, differences)


FAIR_SHARE_JOB_COLUMNS = {"priority", "held", "preemptions", "preempt_requested",
                          "queue_position"}  # fmt: skip


def test_0004_runs_down_and_up_and_matches_the_tables(tmp_path, postgres_url):
    """The fair-share migration: the usage ledger, the jobs' scheduling columns, the users'
    quotas; down to 0003 and up again, on SQLite and Postgres."""
    for url in (f"sqlite:///{tmp_path / 'f.db'}", postgres_url):
        upgrade(url)
        downgrade(url, "0003")
        engine = sa.create_engine(url)
        inspector = sa.inspect(engine)
        assert "gpu_usage" not in inspector.get_table_names()
        assert not FAIR_SHARE_JOB_COLUMNS & {c["name"] for c in inspector.get_columns("jobs")}
        assert "quota_gpu_seconds" not in {c["name"] for c in inspector.get_columns("users")}
        engine.dispose()
        upgrade(url)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        engine.dispose()
        assert differences == [], (url, differences)
