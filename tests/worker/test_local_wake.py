"""The reconciler's wake-up without the broker (worker/runner.py: wake_locally): an idle worker
with an eligible job that fits starts a claim in its own process; a busy one, or one with
nothing eligible (held, paused, too big for its free memory), does not."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core.db import Job
from core.db.migrate import upgrade
from core.db.tables import QueueState
from core.settings import Settings
from tests.worker.queued_jobs import GIB, DeviceWithFree, in_order
from worker import runner
from worker.reconciler import Reconciler


def test_an_idle_worker_is_woken_for_an_eligible_job_that_fits_and_only_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    upgrade(settings.database_url)
    ctx = runner.WorkerContext.from_settings(settings, device=DeviceWithFree(4 * GIB))
    ctx.ready.set()  # as worker/lifecycle.py does once the worker is warm
    woken = threading.Event()

    def run_job(woken_ctx: Any, *_: Any, **__: Any) -> None:
        assert woken_ctx is ctx
        woken.set()

    monkeypatch.setattr(runner, "run_job", run_job)
    reconciler = Reconciler(settings, wake=lambda: runner.wake_locally(ctx))

    def woke() -> bool:
        woken.clear()
        reconciler.run_once()
        for thread in ctx.local_runs:
            thread.join(5)
        return woken.is_set()

    assert not woke()  # an empty queue
    with ctx.db.writing() as session:
        big, small = in_order(session, 6, 3)
        session.execute(sa.update(Job).where(Job.id == small).values(held=True))
    assert not woke()  # the small one is held, the big one needs 6 GiB of the 4 free

    def set_paused(paused: bool) -> None:
        with ctx.db.writing() as session:
            session.merge(QueueState(id=1, paused=paused))

    with ctx.db.writing() as session:
        session.execute(sa.update(Job).where(Job.id == small).values(held=False))
    set_paused(True)
    assert not woke()
    set_paused(False)
    with ctx.slot:  # this process runs a job already
        assert not woke()
    assert woke()  # released, resumed, idle: it claims (in a thread of its own)
    reconciler.db.dispose()
    ctx.db.dispose()
