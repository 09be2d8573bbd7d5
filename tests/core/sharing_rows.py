"""Rows as a claim and a worker leave them, on a migrated SQLite file with users alice and
bob, for the tests of preemption and quotas (tests/core/test_preemption_policy.py,
tests/core/test_quota_claim.py); the ``sharing_db`` fixture is in tests/core/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from core.db import Database, Job, User
from core.db.migrate import upgrade
from core.db.tables import GpuUsage
from core.settings import Settings
from core.users import add_user


def sharing_database(home: Path) -> Iterator[tuple[Database, Settings]]:
    settings = Settings(home=home, preempt_after_s=60, preempt_max=2)
    settings.ensure_dirs()
    upgrade(settings.database_url)
    database = Database(settings.database_url, pool_size=1)
    with database.writing() as session:
        for name in ("alice", "bob"):
            add_user(session, name=name)
    yield database, settings
    database.dispose()


def user_id(session: Any, name: str) -> int:
    return int(session.query(User).filter_by(name=name).one().id)


def add_job(
    db: Database,
    owner: str,
    *,
    queued_at: datetime,
    running_since: datetime | None = None,
    **values: Any,
) -> str:
    """A queued job, or a running one with its open usage row, as a claim leaves it."""
    with db.writing() as session:
        owner_id = user_id(session, owner)
        job = Job(owner_id=owner_id, base_model="m", dataset_id="d", params={}, config={},
                  resolved={}, plan={}, created_at=queued_at, **values)  # fmt: skip
        if running_since is not None:
            job.status, job.attempt, job.started_at = "running", 1, running_since
        session.add(job)
        session.flush()
        if running_since is not None:
            session.add(GpuUsage(user_id=owner_id, job_id=job.id, attempt=1,
                                 started_at=running_since))  # fmt: skip
        return str(job.id)
