"""Loss and learning-rate series from the metrics table, incremental and downsampled.

Long runs have hundreds of thousands of steps; a chart needs a few hundred points. Plain
striding would hide the spikes users look for, so each bucket keeps its first, lowest,
highest and last point: the curve's envelope survives any ``max_points``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import JobMetric, User
from core.jobs.service import get_job


@dataclass(frozen=True)
class Point:
    step: int
    epoch: int
    loss: float
    avg_loss: float
    lr: dict[str, float]


def downsample(points: Sequence[Point], max_points: int) -> list[Point]:
    """At most ``max_points`` (>= 4) points, in step order, keeping each bucket's first,
    min-loss, max-loss and last point."""
    if len(points) <= max_points:
        return list(points)
    buckets = max(1, max_points // 4)
    size = len(points) / buckets
    kept: list[Point] = []
    for b in range(buckets):
        chunk = points[round(b * size) : round((b + 1) * size)]
        if not chunk:
            continue
        low = min(range(len(chunk)), key=lambda i: chunk[i].loss)
        high = max(range(len(chunk)), key=lambda i: chunk[i].loss)
        kept.extend(chunk[i] for i in sorted({0, low, high, len(chunk) - 1}))
    return kept


def load_points(session: Session, *, user: User, job_id: str, since_step: int) -> list[Point]:
    """Points after ``since_step``, one per step: a re-run attempt's value replaces the
    earlier attempt's for the same step."""
    job = get_job(session, user=user, job_id=job_id)
    rows = session.execute(
        sa.select(JobMetric.step, JobMetric.epoch, JobMetric.loss, JobMetric.avg_loss, JobMetric.lr)
        .where(JobMetric.job_id == job.id, JobMetric.step > since_step)
        .order_by(JobMetric.step, JobMetric.attempt, JobMetric.id)
    ).all()
    by_step: dict[int, Point] = {}
    for step, epoch, loss, avg_loss, lr in rows:
        by_step[step] = Point(step, epoch, loss, avg_loss, dict(lr or {}))
    return list(by_step.values())


def series_body(points: list[Point], *, since_step: int, max_points: int) -> dict[str, Any]:
    shown = downsample(points, max_points)
    return {
        "since_step": since_step,
        "last_step": points[-1].step if points else since_step,
        "count": len(points),
        "downsampled": len(shown) < len(points),
        "points": [p.__dict__ for p in shown],
    }
