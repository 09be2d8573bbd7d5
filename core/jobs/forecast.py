"""One forecast of when each queued and running job starts and ends.

The queue is played forward over the counted workers: each worker is free now, or when
its running job ends; each queued job, in queue order, goes to the worker it fits that
would finish it soonest, for its estimated time there (``core.jobs.estimate.worker_fit``).
The result is stored on the rows (``estimated_start_at`` / ``estimated_finish_at``) at
each submit and cancel and every reconciler pass, so a poll reads it instead of computing
it. A running job's end comes from its progress: the model's s/step blended with the
measured one (:func:`blended_s_per_step`), the one ETA the CLI and dashboard show.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.db import Database
from core.db.tables import Job, JobStatus, utcnow
from core.errors import Unavailable
from core.jobs.estimate import worker_fit
from core.jobs.queue import is_paused
from core.settings import Settings
from core.workers import WorkerInfo, counted_workers

log = logging.getLogger(__name__)

# How many measured steps weigh as much as the model's prediction: the first steps of a
# run include warm-up (cuDNN autotuning, the allocator growing), so the model leads for
# about this many steps and the measurement after.
PRIOR_STEPS = 20
# Reasons the forecast owns; a claim's "gpu_memory" (and issue 16's held/quota) are others'.
FORECAST_REASONS = ("paused", "no_fitting_worker")


def blended_s_per_step(model: float | None, measured: float | None, steps_done: int) -> float:
    """The model's s/step weighted as ``PRIOR_STEPS`` steps, the measured rate as the
    steps done: a Bayesian mean with the model as prior (either may be missing)."""
    if model is None or model <= 0:
        return measured or 0.0
    if measured is None or steps_done <= 0:
        return model
    return (PRIOR_STEPS * model + steps_done * measured) / (PRIOR_STEPS + steps_done)


@dataclass
class _Lane:
    worker: WorkerInfo
    free_at: datetime | None  # None: busy for an unknown time


@dataclass(frozen=True)
class Forecast:
    start: datetime | None
    finish: datetime | None
    blocked_reason: str | None = None


def _running_end(job: Any, now: datetime) -> datetime | None:
    eta = (job.progress or {}).get("eta_s")
    if eta is not None:
        return now + timedelta(seconds=float(eta))
    total = (job.estimate or {}).get("total_s")
    if total is not None and job.started_at is not None:
        return max(now, job.started_at + timedelta(seconds=float(total)))
    return None


def play_queue(
    queued: Sequence[Any],
    running: Sequence[Any],
    workers: Sequence[WorkerInfo],
    *,
    now: datetime,
    headroom_bytes: int,
    paused: bool,
) -> dict[str, Forecast]:
    """The forecast of each job (rows with ``id``, ``estimate``, ``progress``, ``started_at``),
    ``queued`` in queue order."""
    out: dict[str, Forecast] = {}
    ends = {job.id: _running_end(job, now) for job in running}
    for job in running:
        out[job.id] = Forecast(job.started_at, ends[job.id])
    lanes = [_Lane(w, ends.get(w.current_job_id) if w.current_job_id else now) for w in workers]
    for job in queued:
        out[job.id] = _place(job, lanes, now, headroom_bytes, paused)
    return out


def _place(
    job: Any, lanes: list[_Lane], now: datetime, headroom_bytes: int, paused: bool
) -> Forecast:
    if paused:
        return Forecast(None, None, "paused")
    estimate = job.estimate
    if not lanes:
        return Forecast(None, None)
    if not estimate or "workload" not in estimate:  # submitted before estimates
        return Forecast(None, None)
    work = estimate["workload"]
    best: tuple[datetime, datetime, _Lane] | None = None
    fitting = 0
    for lane in lanes:
        fit = worker_fit(
            lane.worker, estimate["peak_vram_bytes"], estimate["step_flops"],
            work["steps"], work["samples"], work["saves"], headroom_bytes=headroom_bytes,
            cached_images=work.get("cached_images", 0),
        )  # fmt: skip
        if not fit.fits:
            continue
        fitting += 1
        if lane.free_at is None:
            continue
        start = max(lane.free_at, now)
        finish = start + timedelta(seconds=fit.total_s)
        if best is None or finish < best[1]:
            best = (start, finish, lane)
    if not fitting:
        return Forecast(None, None, "no_fitting_worker")
    if best is None:
        return Forecast(None, None)
    best[2].free_at = best[1]
    return Forecast(best[0], best[1])


# A forecast that moved less than this is not rewritten: the next-in-line job's start is
# "now" at every pass, and rewriting every queued row each pass would load the database
# for a change no reader can act on.
TOLERANCE = timedelta(seconds=10)


def _moved(stored: datetime | None, new: datetime | None) -> bool:
    if stored is None or new is None:
        return stored is not new
    return abs(stored - new) > TOLERANCE


_COLUMNS = (Job.id, Job.status, Job.estimate, Job.progress, Job.started_at, Job.blocked_reason,
            Job.estimated_start_at, Job.estimated_finish_at)  # fmt: skip


def refresh_forecast(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Recompute the forecast and store what changed; returns the rows updated."""
    now = now or utcnow()
    rows = session.execute(
        sa.select(*_COLUMNS)
        .where(Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .order_by(Job.created_at, Job.id)  # queue order (issue 16 makes it the policy's)
    ).all()
    queued = [r for r in rows if r.status == JobStatus.QUEUED]
    running = [r for r in rows if r.status == JobStatus.RUNNING]
    forecasts = play_queue(
        queued,
        running,
        counted_workers(session, settings),
        now=now,
        headroom_bytes=settings.vram_headroom_bytes,
        paused=is_paused(session),
    )
    updated = 0
    for row in rows:
        f = forecasts[row.id]
        values: dict[str, Any] = {}
        if _moved(row.estimated_start_at, f.start) or _moved(row.estimated_finish_at, f.finish):
            values |= {"estimated_start_at": f.start, "estimated_finish_at": f.finish}
        reason = row.blocked_reason
        ours = reason is None or reason in FORECAST_REASONS
        if row.status == JobStatus.QUEUED and ours and reason != f.blocked_reason:
            values["blocked_reason"] = f.blocked_reason
        if values:
            session.execute(
                sa.update(Job)
                .where(Job.id == row.id, Job.status == row.status)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            updated += 1
    return updated


def refresh_after_change(db: Database, settings: Settings) -> None:
    """After a submit or cancel, in a transaction of its own: the change is committed
    already, and if this fails the reconciler's next pass refreshes the forecast."""
    try:
        with db.writing() as session:
            refresh_forecast(session, settings)
    except (SQLAlchemyError, Unavailable) as exc:
        log.warning("forecast not refreshed (the reconciler will): %s", exc)
