"""Thin Celery tasks: they take a job id and hand it to the runner."""

from __future__ import annotations

from functools import cache

from api.jobs.broker import RUN_JOB_TASK
from worker.celery_app import app
from worker.runner import WorkerContext, run_job


@cache
def _context() -> WorkerContext:
    return WorkerContext.from_settings()


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> str | None:
    return run_job(_context(), job_id)
