"""One forecast: the queue played forward (``core/jobs/play.py``) stored on the rows.

Each job's ``queue_position``, ``estimated_start_at`` / ``estimated_finish_at`` and
``blocked_reason`` are written at each queue change (``refresh_after_change``: submit,
claim, end, cancel, hold, priority) and every reconciler pass, so a poll reads them instead
of computing them (docs/scheduling.md, "Positions and forecasts"). A running job's end comes
from its progress: the model's s/step blended with the measured one
(:func:`blended_s_per_step`), the one ETA the CLI and dashboard show.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.db import Database
from core.db.tables import Job, JobStatus, utcnow
from core.errors import Unavailable
from core.jobs.claim import queue_lock
from core.jobs.play import Forecast, Policy, play_queue
from core.jobs.schedule import read_standing
from core.settings import Settings
from core.workers import counted_workers
from core.workers.placement import GPU_MEMORY

log = logging.getLogger(__name__)

# How many measured steps weigh as much as the model's prediction: the first steps of a
# run include warm-up (cuDNN autotuning, the allocator growing), so the model leads for
# about this many steps and the measurement after.
PRIOR_STEPS = 20


def blended_s_per_step(model: float | None, measured: float | None, steps_done: int) -> float:
    """The model's s/step weighted as ``PRIOR_STEPS`` steps, the measured rate as the
    steps done: a Bayesian mean with the model as prior (either may be missing)."""
    if model is None or model <= 0:
        return measured or 0.0
    if measured is None or steps_done <= 0:
        return model
    return (PRIOR_STEPS * model + steps_done * measured) / (PRIOR_STEPS + steps_done)


# A forecast that moved less than this is not rewritten: the next-in-line job's start is
# "now" at every pass, and rewriting every queued row each pass would load the database
# for a change no reader can act on.
TOLERANCE = timedelta(seconds=10)


def _moved(stored: datetime | None, new: datetime | None) -> bool:
    if stored is None or new is None:
        return stored is not new
    return abs(stored - new) > TOLERANCE


_COLUMNS = (Job.id, Job.status, Job.owner_id, Job.priority, Job.created_at, Job.held,
            Job.estimate, Job.progress, Job.started_at, Job.blocked_reason,
            Job.estimated_start_at, Job.estimated_finish_at, Job.queue_position)  # fmt: skip
_JOBS = cast(sa.Table, Job.__table__)
# One statement for every row that changed (executemany), each fenced by the status it was
# read with; rows in id order, so two refreshes on Postgres lock them in the same order.
_STORE = (
    sa.update(_JOBS)
    .where(_JOBS.c.id == sa.bindparam("b_id"), _JOBS.c.status == sa.bindparam("b_status"))
    .values(
        estimated_start_at=sa.bindparam("b_start"),
        estimated_finish_at=sa.bindparam("b_finish"),
        blocked_reason=sa.bindparam("b_reason"),
        queue_position=sa.bindparam("b_position"),
    )
)


def _stored(row: Any, f: Forecast) -> dict[str, Any] | None:
    """What the row should hold, or None when it holds it already."""
    start, finish = row.estimated_start_at, row.estimated_finish_at
    if _moved(start, f.start) or _moved(finish, f.finish):
        start, finish = f.start, f.finish
    reason, position = row.blocked_reason, None
    if row.status == JobStatus.QUEUED:
        # A claim's "gpu_memory" stands until a claim takes the job or the job's own reason
        # (held, quota, paused, no fitting worker) overrides it.
        kept = GPU_MEMORY if row.blocked_reason == GPU_MEMORY else None
        reason, position = f.blocked_reason or kept, f.position
    new = (start, finish, reason, position)
    old = (row.estimated_start_at, row.estimated_finish_at, row.blocked_reason, row.queue_position)
    if new == old:
        return None
    return {"b_id": row.id, "b_status": row.status, "b_start": start, "b_finish": finish,
            "b_reason": reason, "b_position": position}  # fmt: skip


def refresh_forecast(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Replay the policy and store what changed; returns the rows updated."""
    now = now or utcnow()
    queue_lock(session)  # a claim meanwhile would find the rows locked (core/jobs/claim.py)
    rows = session.execute(
        sa.select(*_COLUMNS)
        .where(Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .order_by(Job.created_at, Job.id)
    ).all()
    queued = [r for r in rows if r.status == JobStatus.QUEUED]
    running = [r for r in rows if r.status == JobStatus.RUNNING]
    standing = read_standing(session, settings, now)
    policy = Policy(settings.scheduler, settings.fairshare_half_life_s, standing)
    forecasts = play_queue(
        queued,
        running,
        counted_workers(session, settings),
        now=now,
        headroom_bytes=settings.vram_headroom_bytes,
        paused=standing.paused,
        policy=policy,
    )
    changes = [c for row in rows if (c := _stored(row, forecasts[row.id])) is not None]
    if changes:
        changes.sort(key=lambda c: c["b_id"])
        session.execute(_STORE.execution_options(synchronize_session=False), changes)
    return len(changes)


def refresh_after_change(db: Database, settings: Settings) -> None:
    """After any queue change (submit, claim, end, cancel, hold, priority), in a transaction
    of its own: the change is committed already, and if this fails the reconciler's next
    pass refreshes the forecast."""
    try:
        with db.writing() as session:
            refresh_forecast(session, settings)
    except (SQLAlchemyError, Unavailable) as exc:
        log.warning("forecast not refreshed (the reconciler will): %s", exc)
