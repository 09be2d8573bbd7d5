"""The claim: a free worker takes the first eligible queued job, in policy order, that fits.

Messages name no job (``core/jobs/broker.py``): whatever woke the worker, the database
picks, in one transaction (docs/reliability.md, "Claim"; docs/scheduling.md):

1. On Postgres, a transaction-scoped advisory lock orders claims and forecast refreshes
   (``queue_lock``): a refresh rewrites the stored positions of many queued rows, and a claim
   running meanwhile would find the first-ranked row locked by it and, skipping it, take the
   second. SQLite needs none: its write transactions begin IMMEDIATE, one at a time.
2. The eligible jobs are ranked (``core/jobs/schedule.py``); the first one that fits the
   worker's free memory (``core/workers/placement.py: fits``) is locked with ``FOR UPDATE
   SKIP LOCKED`` (a cancel or a hold being written now is passed over, not waited for) and
   moved ``queued -> running`` by an UPDATE conditional on ``status = 'queued'``, the fence
   SQLite relies on alone.
3. Ranked jobs passed over because they don't fit the free memory are marked
   ``blocked_reason = "gpu_memory"`` (one ``blocked`` event when the wait begins).
4. The attempt's usage row opens (``core/jobs/usage.py: open_usage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import Job, JobStatus, utcnow
from core.jobs.schedule import Waiting, in_policy_order, read_standing
from core.jobs.usage import open_usage
from core.settings import Settings
from core.workers import placement

# pg_advisory_xact_lock's key for "the queue's order": any constant no other code uses.
QUEUE_LOCK_KEY = 0x6C6F7261  # "lora"


@dataclass(frozen=True)
class ClaimingWorker:
    """Who claims: its id (the job's ``worker_id``), registry key, name and free memory."""

    worker_id: str
    key: str | None
    name: str
    free_bytes: int | None


def queue_lock(session: Session) -> None:
    """Serialises claims and forecast refreshes on Postgres until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(QUEUE_LOCK_KEY)))


def take(
    session: Session, *, job_id: str, worker: ClaimingWorker, now: datetime | None = None
) -> int | None:
    """``job_id``: queued -> running for ``worker``, its usage counted from now; the new
    attempt, or None when it is no longer queued (or another transaction holds its row)."""
    now = now or utcnow()
    owner = session.scalar(
        sa.select(Job.owner_id)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .with_for_update(skip_locked=True)
    )
    if owner is None:
        return None
    result = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            attempt=Job.attempt + 1,
            worker_id=worker.worker_id,
            heartbeat_at=now,
            started_at=now,
            progress={"phase": "loading"},
            blocked_reason=None,
            queue_position=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    attempt = int(session.scalar(sa.select(Job.attempt).where(Job.id == job_id)) or 0)
    open_usage(session, user_id=owner, job_id=job_id, attempt=attempt,
               worker_key=worker.key, now=now)  # fmt: skip
    return attempt


def claim_next(
    session: Session, settings: Settings, worker: ClaimingWorker, *, now: datetime | None = None
) -> tuple[str, int] | None:
    """Claims the first eligible job, in policy order, that fits ``worker``; returns it and
    its attempt, or None (paused, nothing eligible, nothing fits)."""
    now = now or utcnow()
    queue_lock(session)
    standing = read_standing(session, settings, now)
    if standing.paused:
        return None
    passed_over: list[Waiting] = []
    claimed: tuple[str, int] | None = None
    for job in in_policy_order(session, settings, standing):
        if not placement.fits(job.estimate, worker.free_bytes):
            passed_over.append(job)
            continue
        attempt = take(session, job_id=job.id, worker=worker, now=now)
        if attempt is not None:
            claimed = (job.id, attempt)
            break
    if worker.free_bytes is not None:  # fits() passes everything when it is unknown
        for job in passed_over:
            placement.block(session, job_id=job.id, free_bytes=worker.free_bytes,
                            worker=worker.name)  # fmt: skip
    return claimed
