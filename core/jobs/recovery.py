"""Crash recovery: expired leases and runs handed back.

The job row decides. Every transition here is a conditional UPDATE on (status, attempt), so
any number of reconcilers (one per worker) never act twice on the same lease, and a stale
worker, fenced by its attempt number, can never overwrite what they did. Each end of an
attempt closes its usage row in the same transaction (``core/jobs/usage.py``). Lost
messages need no recovery here: messages only wake workers, and the reconciler starts idle
workers itself (``worker/reconciler.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db import Database, Job, JobEvent
from core.db.tables import JobStatus, utcnow
from core.jobs.events import record_event
from core.jobs.usage import close_usage
from core.settings import Settings

WORKER_LOST = "worker_lost"
LOST_EVENT = "worker_lost"  # one per run that died or lost its lease: the attempts cap counts them
HANDED_BACK_EVENT = "handed_back"  # a graceful stop: not counted against the cap


def lost_runs(session: Session, job_id: str) -> int:
    return int(
        session.scalar(
            sa.select(sa.func.count())
            .select_from(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.kind == LOST_EVENT)
        )
        or 0
    )


def _end_values(session: Session, settings: Settings, job_id: str, lost: bool) -> dict[str, Any]:
    """What the row becomes: queued again, or cancelled / failed when it must not run again."""
    now = utcnow()
    cancel = session.scalar(sa.select(Job.cancel_requested).where(Job.id == job_id))
    if cancel:
        return {"status": JobStatus.CANCELLED, "finished_at": now, "worker_id": None}
    runs = lost_runs(session, job_id) + 1
    if lost and runs >= settings.max_attempts:
        return {
            "status": JobStatus.FAILED,
            "error_code": WORKER_LOST,
            "finished_at": now,
            "worker_id": None,
            "error_message": (
                f"the job's worker or trainer process was lost {runs} times "
                f"(LORABOX_MAX_ATTEMPTS={settings.max_attempts}); see its log"
            ),
        }
    # Back in line with its submission time kept: the policy ranks it where it was.
    return {"status": JobStatus.QUEUED, "worker_id": None, "heartbeat_at": now,
            "progress": {"phase": "queued"}}  # fmt: skip


def release(
    session: Session,
    settings: Settings,
    *,
    job_id: str,
    attempt: int,
    reason: str,
    lost: bool,
    detail: str | None = None,
    expired_before: datetime | None = None,
) -> JobStatus | None:
    """running (this attempt) -> queued, or failed `worker_lost` after too many lost runs.

    ``lost``: the run died (counts against LORABOX_MAX_ATTEMPTS); else it was handed back.
    ``expired_before``: only if the heartbeat is still older than this (a reconciler must
    not take a lease its worker just renewed). Returns the new status, or None when the
    lease had already moved on.
    """
    values = _end_values(session, settings, job_id, lost)
    condition = [Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING]
    if expired_before is not None:
        condition.append(sa.or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < expired_before))
    result = session.execute(
        sa.update(Job)
        .where(*condition)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    close_usage(session, job_id=job_id, attempt=attempt, now=values.get("finished_at"))
    status = JobStatus(values["status"])
    data = {"reason": reason, "status": status.value, "detail": detail}
    record_event(session, job_id, LOST_EVENT if lost else HANDED_BACK_EVENT, data, attempt=attempt)
    if status.finished:
        record_event(
            session,
            job_id,
            "finished",
            {
                "status": status.value,
                "error_code": values.get("error_code"),
                "message": values.get("error_message"),
            },  # fmt: skip
            attempt=attempt,
        )
    return status


def reclaim_expired(db: Database, settings: Settings) -> list[str]:
    """Releases every running job whose lease expired; returns the ids to enqueue again."""
    cutoff = utcnow() - timedelta(seconds=settings.lease_timeout_s)
    with db.reading() as session:
        expired = session.execute(
            sa.select(Job.id, Job.attempt).where(
                Job.status == JobStatus.RUNNING,
                sa.or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
            )
        ).all()
    requeued = []
    for job_id, attempt in expired:
        with db.writing() as session:
            status = release(
                session, settings, job_id=job_id, attempt=attempt, reason="lease_expired",
                lost=True, expired_before=cutoff,
            )  # fmt: skip
        if status == JobStatus.QUEUED:
            requeued.append(job_id)
    return requeued


def reconcile(db: Database, settings: Settings) -> list[str]:
    """One pass; returns the job ids put back in the queue (wake workers after this commits)."""
    return reclaim_expired(db, settings)
