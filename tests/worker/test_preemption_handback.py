"""A preempted attempt's hand-back (worker/runner.py: finish): the preemption is counted in
the same transaction that puts the job back in line, so a worker that dies, or a database
that fails, between the two can't leave a count without a hand-back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.db import Job, JobEvent
from core.db.tables import JobStatus
from tests.worker.queued_jobs import queued_job, worker_context
from worker import runner
from worker.supervisor import Outcome


def test_a_preemption_is_counted_with_its_hand_back_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = worker_context(tmp_path / "home")
    with ctx.db.writing() as session:
        job_id = queued_job(session, need_gib=1)
        session.execute(sa.update(Job).where(Job.id == job_id).values(preempt_requested=True))
    assert runner.claim(ctx, job_id) == 1
    suspended = Outcome(None, release="preempted", step=7)

    def row() -> tuple[str, int, bool, list[str]]:
        with ctx.db.reading() as session:
            job = session.get(Job, job_id)
            assert job is not None
            kinds = session.scalars(
                sa.select(JobEvent.kind).where(JobEvent.job_id == job_id, JobEvent.attempt == 1)
            ).all()
            return job.status, job.preemptions, job.preempt_requested, list(kinds)

    real_release = runner.release

    def failing_release(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away after the count")

    monkeypatch.setattr(runner, "release", failing_release)
    with pytest.raises(RuntimeError):
        runner.finish(ctx, job_id, 1, suspended, renewed_at=time.monotonic())
    status, preemptions, requested, kinds = row()
    assert (status, preemptions, requested) == (JobStatus.RUNNING, 0, True)  # nothing kept
    assert "preempted" not in kinds

    monkeypatch.setattr(runner, "release", real_release)
    runner.finish(ctx, job_id, 1, suspended, renewed_at=time.monotonic())
    status, preemptions, requested, kinds = row()
    assert (status, preemptions, requested) == (JobStatus.QUEUED, 1, False)
    assert kinds[-2:] == ["preempted", "handed_back"]
    ctx.db.dispose()
