"""Workers: what each one has (memory, peak FLOP/s), what it learned, and the time model.

Torch-free and web-free: the API reads it to estimate and forecast, the worker to report,
claim and learn. :mod:`core.workers.model` is the time model, :mod:`core.workers.peaks` the
table of GPU peaks, :mod:`core.workers.registry` the rows, :mod:`core.workers.placement` the
claim-time memory check.
"""

from core.workers.model import (
    ALLOWANCES,
    RunTimings,
    WorkerInfo,
    job_seconds,
    learned,
    observed_efficiency,
    seconds_per_step,
)
from core.workers.registry import DeviceReport, all_workers, counted_workers

__all__ = [
    "ALLOWANCES",
    "DeviceReport",
    "RunTimings",
    "WorkerInfo",
    "all_workers",
    "counted_workers",
    "job_seconds",
    "learned",
    "observed_efficiency",
    "seconds_per_step",
]
