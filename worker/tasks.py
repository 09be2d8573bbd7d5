"""Thin Celery task: a wake-up for this worker (docs/reliability.md, "Claim").

Messages carry no job id; one sent by an older version still names its job, accepted during
a rolling upgrade and treated as a wake-up like any other.
"""

from __future__ import annotations

from core.jobs.broker import RUN_JOB_TASK
from worker.celery_app import app
from worker.lifecycle import context
from worker.runner import run_job


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str | None = None) -> str | None:
    return run_job(context(), job_id)
