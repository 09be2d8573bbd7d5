"""The time model: how long a step and a job take on one worker, and how a worker learns.

    s/step = step FLOPs / (peak FLOP/s x efficiency)
    job    = steps x s/step + loading + caching x cached images + sampling x samples
             + saving x saves

``peak`` is the device's dense fp16-with-fp32-accumulate tensor rate from the table in
:mod:`core.workers.peaks`, or, for a device the table doesn't know and for a CPU, the rate a
short matmul probe measured when the worker started (``worker/device.py: probe_peak``).
``efficiency`` is the fraction of that peak the trainer's step actually reaches (kernels that
aren't matmuls, launch gaps, the optimizer, data loading); the allowances are the seconds a
job spends outside its steps. Both start from the settings' documented defaults
(``LORABOX_WORKER_DEFAULT_EFFICIENCY``, ``LORABOX_WORKER_ALLOWANCE_*``) and are learned per
worker from the runs it finished (:func:`learned`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

# Allowance names: seconds per job, per cached image, per sample image, per save point.
LOADING, CACHING, SAMPLING, SAVING = "loading", "caching", "sampling", "saving"
ALLOWANCES = (LOADING, CACHING, SAMPLING, SAVING)
EFFICIENCY = "efficiency"

# Learning: each quantity is the median of the worker's last RECENT_RUNS observations. A run
# slowed by another process on a shared card (or CPU) is one outlier among them, not a new
# speed; a real change (a driver, a clock limit) wins once it is most of the window. The
# setting's default counts only until the first run: one real measurement on this machine
# beats a figure chosen for all machines.
RECENT_RUNS = 5
# A measured efficiency outside this range is a broken measurement, not a fact (a step
# timed around a stall, a FLOP count of a different model); it is clamped, never trusted whole.
EFFICIENCY_RANGE = (1e-6, 4.0)


@dataclass(frozen=True)
class WorkerInfo:
    """A counted worker as the API and the forecast see it (no ORM object escapes)."""

    key: str  # "<host>:<GPU UUID>" or "<host>:cpu": a restart finds its row again
    name: str
    host: str
    gpu_name: str | None  # NVML's name; None on a CPU worker
    gpu_uuid: str | None
    total_memory_bytes: int  # the GPU's memory, or the host's RAM on a CPU worker
    free_memory_bytes: int  # at the last heartbeat (MemAvailable on a CPU worker)
    compute_capability: str | None
    torch_version: str | None
    cuda_version: str | None  # the CUDA torch was built with
    peak_flops: float
    peak_source: str  # "table" | "probe"
    efficiency: float
    allowances_s: Mapping[str, float]
    state: str  # "idle" | "busy"
    current_job_id: str | None
    seen_at: datetime
    device: str = "cuda"  # "cuda" | "cpu"
    driver_version: str | None = None
    runs_learned: int = 0  # finished runs the efficiency was learned from
    process: str | None = None  # the lease's worker_id of the process now behind this row
    started_at: datetime | None = None


def seconds_per_step(step_flops: int, worker: WorkerInfo) -> float:
    """The model's seconds per optimizer step (``step_flops``: one optimizer step's FLOPs,
    all its micro-steps, as ``plan.total_steps`` counts steps)."""
    rate = worker.peak_flops * worker.efficiency
    if rate <= 0:
        raise ValueError(f"worker {worker.name} has no peak FLOP/s")
    return step_flops / rate


def job_seconds(
    *,
    total_steps: int,
    s_per_step: float,
    worker: WorkerInfo,
    samples: int,
    saves: int,
    cached_images: int = 0,
) -> float:
    """The whole run: its steps plus the worker's allowances. ``samples``: sample images made;
    ``saves``: save points (each epoch or step save, and the final one); ``cached_images``:
    images whose latents (or text-encoder outputs) are cached before the first step, 0 when
    nothing is cached. An allowance the worker has not stored counts 0."""
    a = worker.allowances_s
    return (
        total_steps * s_per_step
        + a.get(LOADING, 0.0)
        + a.get(CACHING, 0.0) * cached_images
        + a.get(SAMPLING, 0.0) * samples
        + a.get(SAVING, 0.0) * saves
    )


def learned(recent: Sequence[float], observed: float) -> tuple[float, list[float]]:
    """The learned value after one more observation, and the window to keep: the median of
    the last :data:`RECENT_RUNS` observations, ``observed`` included."""
    window = [*recent, observed][-RECENT_RUNS:]
    return float(statistics.median(window)), window


def observed_efficiency(step_flops: int, measured_s_per_step: float, peak_flops: float) -> float:
    """The fraction of the peak a run reached: its FLOPs per second over the peak."""
    if measured_s_per_step <= 0 or peak_flops <= 0:
        raise ValueError("a measured step time and a peak are needed")
    low, high = EFFICIENCY_RANGE
    return min(max(step_flops / (measured_s_per_step * peak_flops), low), high)


@dataclass(frozen=True)
class RunTimings:
    """What one finished run measured, for its worker to learn from (``worker/relay.py``).

    ``seconds`` and ``counts`` per allowance: loading (1), caching (cached images),
    sampling (sample images), saving (save points); an allowance whose count is 0 teaches
    nothing."""

    s_per_step: float | None
    seconds: Mapping[str, float]
    counts: Mapping[str, int]

    def per_unit(self) -> dict[str, float]:
        return {
            name: self.seconds.get(name, 0.0) / self.counts[name]
            for name in ALLOWANCES
            if self.counts.get(name, 0) > 0
        }
