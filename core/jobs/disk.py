"""Will the disk hold this job? Estimated from the LoRA's size and how often it is saved."""

from __future__ import annotations

import shutil
from pathlib import Path

from trainer.config import TrainingConfig
from trainer.plan import TrainingPlan

# A full SDXL LoRA (UNet + both text encoders) holds about 3.6M parameters per unit of rank
# (rank 32 in fp16 is ~230 MB). A generous estimate is safe: the check only refuses.
PARAMS_PER_RANK = 3_600_000


def _bytes_per_param(precision: str) -> int:
    return 4 if precision in ("float", "fp32", "float32") else 2


def estimate_job_bytes(config: TrainingConfig, plan: TrainingPlan) -> int:
    rank = int(getattr(config, "network_dim", 32) or 32)
    lora = PARAMS_PER_RANK * rank * _bytes_per_param(str(getattr(config, "save_precision", "")))
    every_epochs = int(getattr(config, "save_every_n_epochs", 0) or 0)
    every_steps = int(getattr(config, "save_every_n_steps", 0) or 0)
    saves = 1  # the final LoRA
    if every_epochs:
        saves += plan.epochs // every_epochs
    if every_steps:
        saves += plan.total_steps // every_steps
    total = lora * saves
    if getattr(config, "save_state", False) or getattr(config, "save_state_on_train_end", False):
        total += PARAMS_PER_RANK * rank * 4 * 3 * saves  # fp32 weights + two Adam moments
    return total


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free
