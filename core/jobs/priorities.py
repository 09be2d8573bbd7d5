"""Priorities and holds: who may put a job in which tier, and hold or release it while it
waits (docs/scheduling.md, "Priorities and holds").

Users may lower their own jobs (``low``) and hold or release them; only admins raise a job to
``high`` or touch someone else's. Both apply to queued jobs only: a running job already has
its worker (holding it is not a thing: cancel or stop it instead). Every change is an event
on the job, so its history says who moved it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import Job, JobStatus, User
from core.errors import Conflict, Forbidden
from core.jobs.events import record_event
from core.jobs.schedule import tier
from core.jobs.submission import Priority

# Users may choose these for their own jobs; the rest are for admins.
USER_PRIORITIES: tuple[Priority, ...] = ("normal", "low")
PRIORITY_EVENT = "priority_changed"
HOLD_EVENTS = {True: "held", False: "released"}


def check_priority(user: User, priority: str, *, current: str = "normal") -> None:
    """Refuses a tier above what ``user`` may set (a user may always keep or lower one)."""
    if user.is_admin or priority in USER_PRIORITIES or tier(priority) >= tier(current):
        return
    raise Forbidden(f"priority: only admins may set {priority!r} (you may set low or normal)")


def update_job(
    session: Session,
    *,
    user: User,
    job: Job,
    priority: Priority | None = None,
    held: bool | None = None,
) -> bool:
    """Sets a queued job's tier and/or hold (``job``: one ``user`` may see, from
    ``service.get_job``); True when something changed. Caller commits, then refreshes the
    queue's forecast. 409 unless queued; a change to what already is records nothing."""
    if priority is not None:
        check_priority(user, priority, current=job.priority)
    values: dict[str, object] = {}
    if priority is not None and priority != job.priority:
        values["priority"] = priority
    if held is not None and held != job.held:
        values["held"] = held
    if job.status != JobStatus.QUEUED:
        raise Conflict(
            f"job is {job.status}: only a queued job's priority or hold can change "
            "(a running job is not held: cancel or stop it)"
        )
    if not values:
        return False
    # Conditional on queued: a worker may claim it between the read above and this write.
    result = session.execute(
        sa.update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.QUEUED)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"job is {job.status}: only a queued job's priority or hold can change")
    by = {"by": user.name}
    if "priority" in values:
        record_event(session, job.id, PRIORITY_EVENT, {"priority": priority} | by,
                     attempt=job.attempt)  # fmt: skip
    if "held" in values:
        record_event(session, job.id, HOLD_EVENTS[bool(held)], by, attempt=job.attempt)
    return True
