"""Queue state: pause/resume (admins drain the GPU), and the stored queue positions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import Job, JobStatus, QueueState, User, utcnow
from core.errors import Forbidden


def is_paused(session: Session) -> bool:
    return bool(session.scalar(sa.select(QueueState.paused).where(QueueState.id == 1)))


def set_paused(session: Session, *, user: User, paused: bool) -> bool:
    if not user.is_admin:
        raise Forbidden("only admins can pause or resume the queue")
    state = session.get(QueueState, 1)
    if state is None:
        state = QueueState(id=1)
        session.add(state)
    state.paused = paused
    state.updated_at = utcnow()
    return paused


def queue_position(db: Session | sa.Connection, job: Any) -> int | None:
    """1-based place in the policy's order among queued jobs, as the last refresh stored it
    (``core/jobs/forecast.py: refresh_forecast``); None unless queued, or while the job waits
    for a reason of its own (held, over quota, fits no worker): docs/scheduling.md."""
    del db  # stored on the row: nothing to count (the signature stays for its callers)
    return job.queue_position if job.status == JobStatus.QUEUED else None


def queued_ids_in_order(session: Session) -> list[str]:
    """Queued jobs with a place, in the stored policy order."""
    return list(
        session.scalars(
            sa.select(Job.id)
            .where(Job.status == JobStatus.QUEUED, Job.queue_position.is_not(None))
            .order_by(Job.queue_position, Job.created_at, Job.id)
        )
    )
