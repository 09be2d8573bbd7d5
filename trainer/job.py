"""What the trainer is asked to do: one typed, picklable, torch-free value.

The service validates the payload once (``trainer.config.parse_payload``) and plans the job
(``trainer.plan``); the worker builds this from the job's row and hands it, as is, to the
trainer's process. ``python -m trainer`` builds one from a payload file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.config import TrainingConfig
from trainer.plan import TrainingPlan


@dataclass(frozen=True)
class TrainingJob:
    config: TrainingConfig
    base_model: Path
    data_dir: Path
    output_dir: Path
    base_config: Path | None = None
    vae: Path | None = None
    reg_data_dir: Path | None = None
    network_weights: Path | None = None
    resume_state: Path | None = None
    # The plan made at submit: the trainer runs it while the dataset's fingerprint still
    # matches (``trainer.plan.reuse_or_plan``); None plans from the scan.
    plan: TrainingPlan | None = None
