"""Thin Celery tasks: they take a job id and hand it to the runner."""

from __future__ import annotations

from core.jobs.broker import RUN_JOB_TASK
from worker.celery_app import app
from worker.lifecycle import context
from worker.runner import run_job


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> str | None:
    return run_job(context(), job_id)
