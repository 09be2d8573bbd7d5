"""Prometheus metrics, read from the database at scrape time.

The database is the truth and any number of API processes may answer a scrape, so nothing
is counted in process memory: every scrape computes the figures from the tables (a few
aggregate queries over indexed columns).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core.db import Database
from core.db.tables import FINISHED, Dataset, GpuUsage, Job, JobStatus, User, utcnow

# Seconds: a toy run takes under a minute, a real SDXL LoRA from minutes to a day.
DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0)
# A wait in the queue: from seconds (an idle worker) to a day behind a colleague's batch.
WAIT_BUCKETS = (10.0, *DURATION_BUCKETS)


def duration_histogram(
    durations: Iterable[float], bounds: Sequence[float] = DURATION_BUCKETS
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets (``le`` -> count, +Inf last) and the sum."""
    values = sorted(durations)
    buckets = [(str(b), float(bisect.bisect_right(values, b))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    return buckets, float(sum(values))


def steps_per_second(progress: dict[str, Any] | None) -> float | None:
    s_per_step = (progress or {}).get("s_per_step")
    return 1.0 / s_per_step if isinstance(s_per_step, int | float) and s_per_step > 0 else None


class JobCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.reading() as session:
            by_status = dict(
                session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all()
            )
            ended = session.execute(
                sa.select(Job.started_at, Job.finished_at).where(
                    Job.status.in_([s.value for s in FINISHED]),
                    Job.started_at.is_not(None),
                    Job.finished_at.is_not(None),
                )
            ).all()
            running = session.execute(
                sa.select(Job.id, Job.progress).where(Job.status == JobStatus.RUNNING)
            ).all()
            stored = session.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(Dataset.size_bytes), 0))
            ).one()
        jobs = GaugeMetricFamily("lorabox_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], float(by_status.get(status.value, 0)))
        yield jobs
        yield GaugeMetricFamily(
            "lorabox_queue_depth", "Jobs waiting to run", value=by_status.get("queued", 0)
        )
        buckets, total = duration_histogram(
            (end - start).total_seconds() for start, end in ended if start and end
        )
        yield HistogramMetricFamily(
            "lorabox_job_duration_seconds",
            "Run time of finished jobs (started to finished)",
            buckets=buckets,
            sum_value=total,
        )
        rate = GaugeMetricFamily(
            "lorabox_job_steps_per_second", "Training speed of running jobs", labels=["job_id"]
        )
        for job_id, progress in running:
            value = steps_per_second(progress)
            if value is not None:
                rate.add_metric([job_id], value)
        yield rate
        yield GaugeMetricFamily("lorabox_datasets", "Datasets stored", value=stored[0])
        yield GaugeMetricFamily(
            "lorabox_uploaded_bytes", "Bytes of uploaded datasets stored", value=stored[1]
        )


class ShareCollector(Collector):
    """How the GPU is shared (docs/scheduling.md): each user's worker time, from the usage
    ledger (every attempt, an open one up to now), and how long jobs waited for their first
    claim (its ledger row's start minus the submission). Both from rows, so a restart of
    every process loses nothing and any API process answers the same."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        with self.db.reading() as session:
            stretches = session.execute(
                sa.select(User.name, GpuUsage.started_at, GpuUsage.ended_at).join(
                    User, User.id == GpuUsage.user_id
                )
            ).all()
            first_claims = (
                sa.select(GpuUsage.job_id, sa.func.min(GpuUsage.started_at).label("claimed"))
                .group_by(GpuUsage.job_id)
                .subquery()
            )
            waits = session.execute(
                sa.select(Job.created_at, first_claims.c.claimed).join(
                    first_claims, first_claims.c.job_id == Job.id
                )
            ).all()
        seconds: dict[str, float] = defaultdict(float)
        for name, start, end in stretches:
            seconds[name] += max(((end or now) - start).total_seconds(), 0.0)
        used = CounterMetricFamily(
            "lorabox_user_gpu_seconds",
            "Seconds a user's jobs held a worker (every attempt; a running one up to now)",
            labels=["user"],
        )
        for name in sorted(seconds):
            used.add_metric([name], seconds[name])
        yield used
        buckets, total = duration_histogram(
            (max((claimed - created).total_seconds(), 0.0) for created, claimed in waits),
            WAIT_BUCKETS,
        )
        yield HistogramMetricFamily(
            "lorabox_queue_wait_seconds",
            "Time from submission to a job's first claim by a worker",
            buckets=buckets,
            sum_value=total,
        )


def make_registry(db: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector(db))
    registry.register(ShareCollector(db))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
