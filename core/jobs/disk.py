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


def saves_planned(config: TrainingConfig, plan: TrainingPlan) -> int:
    """LoRA files the run writes: one per save point and the final one."""
    saves = 1
    if config.save_every_n_epochs:
        saves += plan.epochs // config.save_every_n_epochs
    if config.save_every_n_steps:
        saves += plan.total_steps // config.save_every_n_steps
    return saves


def estimate_job_bytes(config: TrainingConfig, plan: TrainingPlan) -> int:
    rank = config.network_dim
    lora = PARAMS_PER_RANK * rank * _bytes_per_param(config.save_precision)
    saves = saves_planned(config, plan)
    total = lora * saves
    if config.save_state or config.save_state_on_train_end:
        total += PARAMS_PER_RANK * rank * 4 * 3 * saves  # fp32 weights + two Adam moments
    return total


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free
