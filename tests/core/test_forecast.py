"""The forecast (core/jobs/forecast.py): the queue played forward over the counted workers,
and the ETA that blends the model's s/step with the measured one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.jobs.estimate import worker_fit
from core.jobs.forecast import PRIOR_STEPS, blended_s_per_step
from core.jobs.play import play_queue
from core.workers import WorkerInfo

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
GIB = 2**30


def _worker(name: str, memory_gib: float, *, peak: float = 1e14, job: str | None = None) -> Any:
    return WorkerInfo(
        key=f"host:{name}", name=name, host="host", gpu_name="GPU", gpu_uuid=name,
        total_memory_bytes=int(memory_gib * GIB), free_memory_bytes=int(memory_gib * GIB),
        compute_capability="8.9", torch_version="2.13.0", cuda_version="12.8",
        peak_flops=peak, peak_source="table", efficiency=0.5, allowances_s={},
        state="busy" if job else "idle", current_job_id=job, seen_at=NOW,
    )  # fmt: skip


@dataclass
class Row:
    id: str
    estimate: dict[str, Any] | None
    progress: dict[str, Any] | None = None
    started_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _estimate(gib: float, steps: int = 100, flops: float = 1e14) -> dict[str, Any]:
    return {
        "peak_vram_bytes": int(gib * GIB),
        "step_flops": int(flops),
        "workload": {"steps": steps, "samples": 0, "saves": 1},
    }


def _seconds(worker: Any, estimate: dict[str, Any]) -> float:
    work = estimate["workload"]
    fit = worker_fit(
        worker, estimate["peak_vram_bytes"], estimate["step_flops"], work["steps"],
        work["samples"], work["saves"], headroom_bytes=0,
    )  # fmt: skip
    return fit.total_s


def test_one_worker_runs_the_queue_back_to_back():
    worker = _worker("a", 16)
    jobs = [Row("j1", _estimate(8)), Row("j2", _estimate(8, steps=300))]
    out = play_queue(jobs, [], [worker], now=NOW, headroom_bytes=GIB, paused=False)
    first = timedelta(seconds=_seconds(worker, jobs[0].estimate or {}))
    second = timedelta(seconds=_seconds(worker, jobs[1].estimate or {}))
    assert out["j1"].start == NOW and out["j1"].finish == NOW + first
    assert out["j2"].start == NOW + first and out["j2"].finish == NOW + first + second


def test_a_job_goes_to_the_worker_that_finishes_it_soonest_and_only_where_it_fits():
    small, big = _worker("small", 12), _worker("big", 24, peak=2e14)
    jobs = [Row("large", _estimate(20)), Row("next", _estimate(8)), Row("third", _estimate(8))]
    out = play_queue(jobs, [], [small, big], now=NOW, headroom_bytes=GIB, paused=False)
    assert out["large"].start == NOW  # only the big card holds it
    assert out["next"].start == NOW  # the small card is idle: it starts there at once
    # the third goes where it ends first: the big card, free again (twice as fast) before
    # the small one finishes "next"
    assert out["large"].finish < out["next"].finish  # type: ignore[operator]
    assert out["third"].start == out["large"].finish


def test_a_running_job_holds_its_worker_until_its_eta():
    worker = _worker("a", 16, job="run")
    running = Row("run", _estimate(8), progress={"eta_s": 600}, started_at=NOW)
    out = play_queue([Row("q", _estimate(8))], [running], [worker], now=NOW,
                     headroom_bytes=GIB, paused=False)  # fmt: skip
    assert out["run"].start == NOW and out["run"].finish == NOW + timedelta(seconds=600)
    assert out["q"].start == NOW + timedelta(seconds=600)


def test_what_cannot_be_known_is_null_with_its_reason():
    worker = _worker("a", 8)
    rows = [Row("huge", _estimate(40)), Row("old", None)]
    out = play_queue(rows, [], [worker], now=NOW, headroom_bytes=GIB, paused=False)
    assert (out["huge"].start, out["huge"].blocked_reason) == (None, "no_fitting_worker")
    assert (out["old"].start, out["old"].blocked_reason) == (None, None)
    assert play_queue(rows, [], [], now=NOW, headroom_bytes=GIB, paused=False)["huge"].start is None
    paused = play_queue(rows, [], [worker], now=NOW, headroom_bytes=GIB, paused=True)
    assert paused["huge"].blocked_reason == "paused"


def test_a_running_job_of_unknown_length_leaves_its_worker_unknown():
    worker = _worker("a", 16, job="run")
    running = Row("run", None, started_at=NOW)
    out = play_queue([Row("q", _estimate(8))], [running], [worker], now=NOW,
                     headroom_bytes=GIB, paused=False)  # fmt: skip
    assert out["run"].finish is None and out["q"].start is None


@pytest.mark.parametrize("steps_done", [0, 1, PRIOR_STEPS, 10 * PRIOR_STEPS])
def test_the_eta_leans_on_the_model_first_and_on_the_measurement_as_steps_accumulate(
    steps_done: int,
):
    model, measured = 2.0, 1.0
    blended = blended_s_per_step(model, measured, steps_done)
    assert measured <= blended <= model
    if steps_done == 0:
        assert blended == model
    if steps_done == PRIOR_STEPS:
        assert blended == pytest.approx(1.5)
    if steps_done > PRIOR_STEPS:
        assert blended < 1.1


def test_the_eta_without_a_model_is_the_measurement():
    assert blended_s_per_step(None, 1.25, 5) == 1.25
    assert blended_s_per_step(3.0, None, 5) == 3.0


def test_worker_fit_keeps_the_headroom():
    worker = _worker("a", 16)
    assert worker_fit(worker, 15 * GIB, 10**12, 10, 0, 1, headroom_bytes=GIB).fits
    assert not worker_fit(worker, 15 * GIB + 1, 10**12, 10, 0, 1, headroom_bytes=GIB).fits
    slower = replace(worker, peak_flops=worker.peak_flops / 2)
    assert worker_fit(slower, GIB, 10**12, 10, 0, 1, headroom_bytes=0).s_per_step == pytest.approx(
        2 * worker_fit(worker, GIB, 10**12, 10, 0, 1, headroom_bytes=0).s_per_step, rel=1e-3
    )
