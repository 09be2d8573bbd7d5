"""The claim-time memory check (worker/runner.py: claim_fitting, core/jobs/claim.py,
core/workers/placement.py): on a real database, with the real claim; only the device's free
memory is stood in for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core.db import Job, JobEvent
from core.db.migrate import upgrade
from core.db.tables import Worker, utcnow
from core.settings import Settings
from core.workers.registry import report_worker
from tests.conftest import fresh_postgres_database
from tests.worker.queued_jobs import GIB, DeviceWithFree, in_order
from worker.runner import WorkerContext, claim_fitting, run_job


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    values: dict[str, Any] = {"home": tmp_path / "home"}
    if request.param == "sqlite":
        built = Settings(**values)
        built.ensure_dirs()
        upgrade(built.database_url)
        yield built
        return
    with fresh_postgres_database() as url:
        upgrade(url)
        yield Settings(**values, database_url=url)


def _context(settings: Settings, free_gib: float) -> WorkerContext:
    ctx = WorkerContext.from_settings(settings, device=DeviceWithFree(int(free_gib * GIB)))
    with ctx.db.writing() as session:
        report = ctx.device.report(50e9, "probe")
        report_worker(session, settings, report, state="idle", current_job_id=None,
                      process=ctx.worker_id, started_at=utcnow())  # fmt: skip
    return ctx


def _row(ctx: WorkerContext, job_id: str) -> Any:
    with ctx.db.reading() as session:
        return session.execute(
            sa.select(Job.status, Job.attempt, Job.blocked_reason).where(Job.id == job_id)
        ).one()


def _events(ctx: WorkerContext, job_id: str, kind: str) -> list[dict[str, Any]]:
    with ctx.db.reading() as session:
        query = sa.select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.kind == kind)
        return list(session.scalars(query))


def _worker_state(ctx: WorkerContext) -> tuple[str, str | None]:
    with ctx.db.reading() as session:
        row = session.get(Worker, ctx.device.key)
        assert row is not None
        return row.state, row.current_job_id


def test_a_job_short_of_free_memory_waits_and_the_worker_takes_the_next_that_fits(settings):
    ctx = _context(settings, free_gib=6)
    with ctx.db.writing() as session:
        big, bigger, small, old = in_order(session, 10, 12, 4, None)

    assert claim_fitting(ctx) == (small, 1)  # the first queued job, in order, that fits 6 GiB
    # Both ranked ahead of it and too big for 6 GiB: they wait for memory.
    assert tuple(_row(ctx, big)) == ("queued", 0, "gpu_memory")
    assert tuple(_row(ctx, bigger)) == ("queued", 0, "gpu_memory")
    assert tuple(_row(ctx, small)) == ("running", 1, None)
    (blocked,) = _events(ctx, big, "blocked")
    assert blocked == {"reason": "gpu_memory", "needed_bytes": 10 * GIB, "free_bytes": 6 * GIB,
                       "worker": ctx.device.name}  # fmt: skip
    assert _worker_state(ctx) == ("busy", small)

    # The next wake-up: still short, they wait (one event each, not one per try); a job
    # without an estimate (submitted before estimates existed) is never held back.
    assert claim_fitting(ctx) == (old, 1)
    assert len(_events(ctx, big, "blocked")) == 1
    assert len(_events(ctx, small, "started")) == 1
    assert claim_fitting(ctx) is None  # nothing left that fits: the wake-up does nothing

    # Memory freed up (the other process on the card ended): the big job is claimed first
    # and no longer says it waits.
    ctx.device.free_bytes = 11 * GIB  # type: ignore[attr-defined]
    assert claim_fitting(ctx) == (big, 1)
    assert tuple(_row(ctx, big)) == ("running", 1, None)
    ctx.db.dispose()


def test_a_worker_with_nothing_that_fits_starts_no_trainer_and_leaves_the_job_queued(settings):
    ctx = _context(settings, free_gib=1)
    with ctx.db.writing() as session:
        (job,) = in_order(session, 3)

    def never_started(*_: Any) -> None:
        raise AssertionError("no trainer may start for a job that does not fit")

    assert run_job(ctx, target=never_started) is None
    assert tuple(_row(ctx, job)) == ("queued", 0, "gpu_memory")
    assert _worker_state(ctx) == ("idle", None)
    ctx.db.dispose()
