"""Quotas at the claim (docs/scheduling.md, "Quotas"): an owner over budget waits while
another user's job is claimed, and is claimed once the rolling window frees time; the usage
is the database's, so a fresh process (a restart) reads the same."""

from __future__ import annotations

from datetime import timedelta

from core.db import Database
from core.db.tables import GpuUsage, utcnow
from core.jobs.claim import ClaimingWorker, claim_next
from core.users import set_quota
from tests.core.sharing_rows import add_job as _job
from tests.core.sharing_rows import user_id as _user

WORKER = ClaimingWorker(worker_id="w1", key=None, name="w1", free_bytes=None)


def test_an_owner_over_quota_waits_while_another_runs_then_starts_as_the_window_frees(
    sharing_db,
):
    database, settings = sharing_db
    now = utcnow()
    with database.writing() as session:
        set_quota(session, name="alice", gpu_seconds=60, window_s=300)
        session.add(GpuUsage(user_id=_user(session, "alice"), job_id="x" * 32, attempt=1,
                             started_at=now - timedelta(seconds=200),
                             ended_at=now - timedelta(seconds=120)))  # fmt: skip
    alice = _job(database, "alice", queued_at=now - timedelta(seconds=100))
    bob = _job(database, "bob", queued_at=now - timedelta(seconds=10))
    with database.writing() as session:
        assert claim_next(session, settings, WORKER, now=now) == (bob, 1)
    with database.writing() as session:
        assert claim_next(session, settings, WORKER, now=now) is None  # 80 s used of 60
    # A restart: a new process reads the ledger from the database and finds the same usage;
    # 125 s later only 55 s of alice's stretch are inside her 300 s window.
    database.dispose()
    fresh = Database(settings.database_url, pool_size=1)
    with fresh.writing() as session:
        assert claim_next(session, settings, WORKER, now=now + timedelta(seconds=115)) is None
        later = now + timedelta(seconds=125)
        assert claim_next(session, settings, WORKER, now=later)[0] == alice
    fresh.dispose()
