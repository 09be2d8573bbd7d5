"""The one ETA a running job shows (worker/relay.py): the time model's s/step for the job on
this worker, blended with the measured rate as steps accumulate (core/jobs/forecast.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.db import Database
from core.jobs.forecast import PRIOR_STEPS, blended_s_per_step
from core.settings import Settings
from trainer.hooks import StepCompleted
from worker.relay import EventRelay


def step(n: int, total: int, seconds: float) -> StepCompleted:
    return StepCompleted(step=n, total_steps=total, epoch=1, total_epochs=1, loss=0.1,
                         avg_loss=0.1, lr={"unet": 1e-4}, samples_per_s=1.0,
                         s_per_step=seconds)  # fmt: skip


@pytest.mark.parametrize("first_step", [1, 51])  # a fresh run, and an attempt resumed at 50
def test_the_eta_starts_from_the_model_and_follows_the_measurement(tmp_path: Path, first_step):
    settings = Settings(home=tmp_path)
    db = Database(settings.database_url)
    relay = EventRelay(db, settings, "job", 1)  # steps are batched in memory: no row needed
    relay.model_s_per_step = 2.0
    total = first_step + 10 * PRIOR_STEPS
    relay(step(first_step, total, 1.0))
    remaining = total - first_step
    assert relay.progress["eta_s"] == pytest.approx(blended_s_per_step(2.0, 1.0, 1) * remaining)
    assert relay.progress["eta_s"] > 1.9 * remaining  # one measured step barely moves it
    for n in range(first_step + 1, first_step + 5 * PRIOR_STEPS):
        relay(step(n, total, 1.0))
    remaining = total - (first_step + 5 * PRIOR_STEPS - 1)
    assert relay.progress["eta_s"] == pytest.approx(
        blended_s_per_step(2.0, 1.0, 5 * PRIOR_STEPS) * remaining, rel=1e-3
    )
    assert relay.progress["eta_s"] < 1.2 * remaining  # the measurement leads by now
    db.dispose()


def test_without_an_estimate_the_eta_is_the_measured_rate(tmp_path: Path):
    settings = Settings(home=tmp_path)
    relay = EventRelay(Database(settings.database_url), settings, "job", 1)
    relay(step(1, 11, 0.5))
    assert relay.progress["eta_s"] == pytest.approx(5.0)
