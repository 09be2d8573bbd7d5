"""Schedule arithmetic that needs no torch (the planner uses it)."""

from __future__ import annotations


def warmup_steps(total_steps: int, warmup_percent: float, absolute: int | None = None) -> int:
    """The GUI's ``round(lr_warmup * max_train_steps / 100)``, or an absolute override."""
    if absolute is not None:
        return absolute
    return round(float(warmup_percent * total_steps / 100))
