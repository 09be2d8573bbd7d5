"""Learning-rate schedules (sd-scripts ``library/train_util.py: get_scheduler_fix``).

sd-scripts uses diffusers' schedule functions, stepped once per optimizer step;
so do we. Kohya's warmup is a percentage of the GUI's step count (``trainer.plan``).
piecewise_constant takes only ``step_rules`` from ``lr_scheduler_args`` and no warmup, as
``get_scheduler_fix`` calls it.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup: int,
    num_cycles: int,
    power: float,
    kwargs: dict[str, Any],
) -> torch.optim.lr_scheduler.LRScheduler:
    if name == "adafactor":
        from transformers.optimization import AdafactorSchedule

        initial = optimizer.param_groups[0].get("initial_lr", 0.0)
        return AdafactorSchedule(optimizer, initial_lr=initial)
    schedule = TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]
    args: dict[str, Any] = {}
    if name not in ("constant", "piecewise_constant"):
        args["num_warmup_steps"] = warmup
    if name not in ("constant", "constant_with_warmup", "piecewise_constant"):
        args["num_training_steps"] = total_steps
    if name == "cosine_with_restarts":
        args["num_cycles"] = num_cycles
    if name == "polynomial":
        args["power"] = power
    return schedule(optimizer, **{**args, **kwargs})  # type: ignore[operator]
