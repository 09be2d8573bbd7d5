"""Queue state: pause/resume (admins drain the GPU), and queue positions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.db.models import Job, JobStatus, QueueState, User, utcnow
from api.exceptions import Forbidden


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


def queue_position(session: Session, job: Any) -> int | None:
    """1-based place among all queued jobs, in submission order; None unless queued."""
    if job.status != JobStatus.QUEUED:
        return None
    ahead = session.scalar(
        sa.select(sa.func.count())
        .select_from(Job)
        .where(
            Job.status == JobStatus.QUEUED,
            sa.or_(
                Job.created_at < job.created_at,
                sa.and_(Job.created_at == job.created_at, Job.id < job.id),
            ),
        )
    )
    return int(ahead or 0) + 1


def queued_ids_in_order(session: Session) -> list[str]:
    return list(
        session.scalars(
            sa.select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at, Job.id)
        )
    )
