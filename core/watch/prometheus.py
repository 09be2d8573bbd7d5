"""Prometheus metrics, read from the database at scrape time.

The database is the truth and any number of API processes may answer a scrape, so nothing
is counted in process memory: every scrape computes the figures from the tables (a few
aggregate queries over indexed columns).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from core.db import Database
from core.db.tables import FINISHED, Dataset, Job, JobStatus

# Seconds: a toy run takes under a minute, a real SDXL LoRA from minutes to a day.
DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0)


def duration_histogram(durations: Iterable[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets (``le`` -> count, +Inf last) and the sum."""
    values = sorted(durations)
    buckets = [(str(b), float(bisect.bisect_right(values, b))) for b in DURATION_BUCKETS]
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


def make_registry(db: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector(db))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
