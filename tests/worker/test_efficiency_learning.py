"""A worker learns its speed from the runs it finished (worker/relay.py: RunClock,
core/workers/registry.py: learn_from_run): its clock, and convergence on real CPU training."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from core.db import Job
from core.db.migrate import upgrade
from core.settings import Settings
from core.workers import counted_workers, seconds_per_step
from tests.worker.queued_jobs import trainable_job
from worker.heartbeat import Heartbeat, settle_peak
from worker.relay import RunClock
from worker.runner import WorkerContext, run_job
from worker.trainer_process import warm_up

# FLOPs of one step of the miniature SDXL at 64x64, batch 1 (small_payload): counted by
# trainer/estimate/trace.py: trace_step(config, base=<the miniature's config folder>), the
# same FlopCounterMode trace the estimates use. Tracing it here would take ~25 s.
TINY_STEP_FLOPS = 880_093_440


def test_the_run_clock_times_steps_phases_and_their_units():
    clock = RunClock(started=100.0)
    clock.phase("loading", 100.5)  # the trainer's first event: loading goes on
    clock.phase("caching", 112.0)  # loading took 12 s from the claim
    clock.phase("training", 115.0)
    for seconds in (3.0, 0.5, 0.7, 0.6):  # the first step warms up: left out
        clock.step(seconds)
    clock.phase("sampling", 120.0)
    clock.sample()
    clock.sample()
    clock.phase("training", 124.0)
    clock.phase("saving", 130.0)
    clock.seen(131.5)  # the final save's artifact: the last event
    timings = clock.timings(cached_images=6)
    assert timings.s_per_step == pytest.approx(0.6)
    assert timings.seconds == pytest.approx(
        {"loading": 12.0, "caching": 3.0, "sampling": 4.0, "saving": 1.5}
    )
    assert timings.counts == {"loading": 1, "caching": 6, "sampling": 2, "saving": 1}
    assert timings.per_unit() == pytest.approx(
        {"loading": 12.0, "caching": 0.5, "sampling": 2.0, "saving": 1.5}
    )
    lone = RunClock(started=0.0)
    lone.step(2.0)
    assert lone.s_per_step() == 2.0  # a one-step run: its only step


@pytest.mark.slow
def test_the_learned_efficiency_converges_on_cpu_training(tmp_path: Path, tiny_models_dir: Path):
    settings = Settings(home=tmp_path / "home", models_dir=tiny_models_dir,
                        progress_interval_s=0.2, flag_poll_interval_s=0.2)  # fmt: skip
    settings.ensure_dirs()
    upgrade(settings.database_url)
    ctx = WorkerContext.from_settings(settings)
    warm_up(settings.trainer_start_method)  # as the worker does before its first job
    heartbeat = Heartbeat(ctx, settle_peak(ctx))
    rows: list[tuple[float, float, float]] = []  # predicted s/step, measured, efficiency
    for seed in range(4):
        heartbeat.beat()  # what its heartbeat thread does every LORABOX_WORKER_HEARTBEAT_S
        with ctx.db.writing() as session:
            job_id = trainable_job(session, settings, images=6, step_flops=TINY_STEP_FLOPS,
                                   epoch=1, seed=seed + 1, save_every_n_epochs=None)  # fmt: skip
            (worker,) = counted_workers(session, settings)
        predicted = seconds_per_step(TINY_STEP_FLOPS, worker)
        assert run_job(ctx, job_id) == "succeeded"
        with ctx.db.reading() as session:
            job: Any = session.get(Job, job_id)
            measured = job.measured_s_per_step
        rows.append((predicted, measured, worker.efficiency))
    heartbeat.beat()
    with ctx.db.reading() as session:
        (learned,) = counted_workers(session, settings)
    heartbeat.db.dispose()
    ctx.db.dispose()

    print(f"\nCPU peak (probe) {learned.peak_flops / 1e9:.1f} GFLOP/s")
    for i, (predicted, measured, efficiency) in enumerate(rows):
        print(f"job {i + 1}: efficiency {efficiency:.4f} predicted {predicted:.3f} s/step, "
              f"measured {measured:.3f} ({predicted / measured:.2f}x)")  # fmt: skip
    print(f"learned efficiency {learned.efficiency:.4f}, allowances {learned.allowances_s}")
    # Prediction errors as |ln(predicted / measured)|: 0.3 is about 35% either way.
    errors = [abs(math.log(predicted / measured)) for predicted, measured, _ in rows]
    typical = statistics.median(measured for _, measured, _ in rows)
    final = seconds_per_step(TINY_STEP_FLOPS, learned)
    print(f"after 4 runs: predicts {final:.3f} s/step, runs measured {typical:.3f} (median)")
    # The default efficiency was set for GPUs: 5-15x off on a CPU. The worker's first run
    # replaces it; from the third on, the median of its runs predicts within the run-to-run
    # noise of this shared 2-core box, even when one run was slowed by another process.
    assert learned.runs_learned == 4
    assert errors[0] > 1.0, rows
    assert errors[-1] < 0.5, rows
    assert abs(math.log(final / typical)) < 0.25, (final, rows)
    # The allowances came from the same runs (loading, six images' latents cached, one save
    # each): the miniature's seconds, far below the defaults chosen for full-size SDXL.
    assert learned.allowances_s["loading"] < settings.worker_allowance_loading_s / 3
    assert learned.allowances_s["caching"] < settings.worker_allowance_caching_s / 3
    assert learned.allowances_s["saving"] < settings.worker_allowance_saving_s / 3
    assert learned.allowances_s["sampling"] == settings.worker_allowance_sampling_s  # none made
