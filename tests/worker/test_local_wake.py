"""The reconciler's wake-up without the broker (worker/runner.py: wake_locally): an idle worker
with an eligible job that fits starts a claim in its own process; a busy one, or one with
nothing eligible (held, paused, too big for its free memory), does not."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core.db import Job
from core.db.tables import QueueState
from tests.worker.queued_jobs import in_order, queued_job, worker_context
from worker import runner
from worker.reconciler import Reconciler


def test_an_idle_worker_is_woken_for_an_eligible_job_that_fits_and_only_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = worker_context(tmp_path / "home")
    settings = ctx.settings
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


def test_a_new_job_is_left_to_its_message_for_the_grace_then_woken_before_the_next_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that finds a job queued just now leaves it to its wake message for
    ``wake_grace_s`` (half the interval here: 2 of 4 s), then wakes this worker for it when
    the grace ends: a lost message delays the start by the grace, not by a whole interval."""
    ctx = worker_context(tmp_path / "home", reconcile_interval_s=4.0)
    settings = ctx.settings
    ctx.ready.set()
    woken_at: list[float] = []
    monkeypatch.setattr(runner, "run_job", lambda *_, **__: woken_at.append(time.monotonic()))
    reconciler = Reconciler(settings, wake=lambda: runner.wake_locally(ctx))
    with ctx.db.writing() as session:
        queued_job(session, need_gib=1)
    queued = time.monotonic()
    assert reconciler.run_once() == pytest.approx(settings.wake_grace_s, abs=0.5)
    assert not woken_at  # the message's turn
    reconciler.start()
    try:
        deadline = queued + settings.reconcile_interval_s
        while not woken_at and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reconciler.stop()
        reconciler.join(10)
    assert woken_at, "not woken before the next pass"
    assert settings.wake_grace_s - 0.1 <= woken_at[0] - queued < settings.reconcile_interval_s
    reconciler.db.dispose()
    ctx.db.dispose()
