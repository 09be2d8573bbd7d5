"""Schedule arithmetic that needs no torch (the planner uses it)."""

from __future__ import annotations


def warmup_steps(gui_steps: int, warmup_percent: float, absolute: int | None = None) -> int:
    """kohya_ss v24.1.7 ``kohya_gui/lora_gui.py: train_model``:
    ``round(float(int(lr_warmup) * int(max_train_steps) / 100))`` of the GUI's own step
    count (a fractional percentage is truncated), or the absolute ``lr_warmup_steps``."""
    if absolute is not None:
        return absolute
    return round(float(int(warmup_percent) * int(gui_steps) / 100))
