"""How long a job trains, computed as the Kohya GUI computes it.

The GUI's estimate (and the warmup derived from it) is kohya_ss ``kohya_gui/lora_gui.py:
train_model``; the total with ``max_train_epochs`` and the epoch count are sd-scripts'
(``train_network.py: NetworkTrainer.train``). The rules are in
docs/kohya-semantics.md, "Steps, epochs and warmup".

Torch-free: the API answers ``POST /v1/jobs/validate`` with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.config import TrainingConfig
from trainer.data.batches import batches_per_epoch, bucket_counts, bucket_images
from trainer.data.folders import DatasetScan, ImageRecord, balance_regularization, scan_dataset
from trainer.hooks import Notice
from trainer.optim.schedule_math import warmup_steps


@dataclass(frozen=True)
class BucketCount:
    resolution: tuple[int, int]
    count: int  # images x repeats in this bucket


@dataclass(frozen=True)
class TrainingPlan:
    total_steps: int
    batches_per_epoch: int
    epochs: int
    warmup_steps: int
    images_x_repeats: int
    buckets: tuple[BucketCount, ...]
    warnings: tuple[Notice, ...]
    dataset_fingerprint: str = ""  # of the scans it was made from (``DatasetScan.fingerprint``)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["buckets"] = [
            {"resolution": list(b.resolution), "count": b.count} for b in self.buckets
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingPlan:
        """The plan as ``to_dict`` stored it (the service adds its own warnings: kept)."""
        return cls(
            total_steps=data["total_steps"],
            batches_per_epoch=data["batches_per_epoch"],
            epochs=data["epochs"],
            warmup_steps=data["warmup_steps"],
            images_x_repeats=data["images_x_repeats"],
            buckets=tuple(
                BucketCount((b["resolution"][0], b["resolution"][1]), b["count"])
                for b in data["buckets"]
            ),
            warnings=tuple(Notice(w["message"], w.get("field")) for w in data["warnings"]),
            dataset_fingerprint=data.get("dataset_fingerprint", ""),
        )


# The image files kohya_ss v24.1.7's step estimate counts (train_model: lower-cased names
# ending in these); sd-scripts also trains .bmp files, which the estimate leaves out.
GUI_COUNTED = (".jpg", ".jpeg", ".png", ".webp")


def gui_images_x_repeats(scan: DatasetScan) -> int:
    """Images x repeats as the GUI's estimate counts them (no .bmp)."""
    return sum(r.repeats for r in scan.images if r.path.name.lower().endswith(GUI_COUNTED))


def gui_steps(config: TrainingConfig, images_x_repeats: int, with_reg: bool = False) -> int:
    """The step count kohya_ss ``train_model`` computes and derives warmup from:
    ``max_train_steps`` if set, else ceil(images x repeats / batch / accumulation x epoch x
    reg factor), evaluated in its float order."""
    if config.max_train_steps:
        return config.max_train_steps
    reg_factor = 2 if with_reg else 1
    return math.ceil(
        float(images_x_repeats)
        / config.train_batch_size
        / config.gradient_accumulation_steps
        * config.epochs
        * reg_factor
    )


def total_steps(
    config: TrainingConfig, images_x_repeats: int, batches: int, with_reg: bool = False
) -> int:
    """Optimizer steps of the run.

    ``max_train_epochs`` wins, with bucket-exact epochs (sd-scripts ``train_network.py:
    NetworkTrainer.train`` recomputes ``max_train_steps`` from it, at kohya_ss' commit and
    at main); else the GUI's :func:`gui_steps`.
    """
    if config.max_train_epochs:
        return config.max_train_epochs * math.ceil(batches / config.gradient_accumulation_steps)
    return gui_steps(config, images_x_repeats, with_reg)


def epochs_for(steps: int, batches: int, accumulation: int) -> int:
    """sd-scripts' epoch count: the run stops at ``steps``, maybe mid-epoch."""
    return math.ceil(steps / math.ceil(batches / accumulation))


def text_encoder_stop_step(percent: int, total_steps: int) -> int | None:
    """The optimizer step after which the text-encoder LoRA freezes.

    kohya_ss v24.1.7 ``kohya_gui/lora_gui.py: train_model``: ceil(total / 100 * pct), with
    the GUI's ``total`` (``trainer.run.text_encoder_stop``); -1 means the text encoders
    are not trained at all (step 0); 0 means they train to the end (None).
    """
    if percent == 0:
        return None
    if percent < 0:
        return 0
    return math.ceil(float(total_steps) / 100 * percent)


def training_records(scan: DatasetScan, reg_scan: DatasetScan | None) -> tuple[ImageRecord, ...]:
    """The training images, then the regularization images balanced against them."""
    if reg_scan is None:
        return scan.images
    return scan.images + balance_regularization(reg_scan.images, scan.images_x_repeats)


def plan_from_scan(
    config: TrainingConfig, scan: DatasetScan, reg_scan: DatasetScan | None = None
) -> TrainingPlan:
    images = bucket_images(training_records(scan, reg_scan), config)
    batches = batches_per_epoch(images, config.train_batch_size)
    counted, with_reg = gui_images_x_repeats(scan), reg_scan is not None
    steps = total_steps(config, counted, batches, with_reg=with_reg)
    # The GUI computes warmup from its own count; sd-scripts keeps that number even when
    # max_train_epochs changes the total.
    warmup = warmup_steps(
        gui_steps(config, counted, with_reg), config.lr_warmup_percent, config.lr_warmup_steps
    )
    warnings = [Notice(message) for message in scan.warnings]
    counts = bucket_counts(images)
    return TrainingPlan(
        total_steps=steps,
        batches_per_epoch=batches,
        epochs=epochs_for(steps, batches, config.gradient_accumulation_steps),
        warmup_steps=warmup,
        images_x_repeats=scan.images_x_repeats,
        buckets=tuple(BucketCount(bucket, count) for bucket, count in counts.items()),
        warnings=tuple(warnings),
        dataset_fingerprint=scans_fingerprint(scan, reg_scan),
    )


def scans_fingerprint(scan: DatasetScan, reg_scan: DatasetScan | None) -> str:
    return scan.fingerprint + (f"+{reg_scan.fingerprint}" if reg_scan is not None else "")


def reuse_or_plan(
    stored: TrainingPlan | None,
    config: TrainingConfig,
    scan: DatasetScan,
    reg_scan: DatasetScan | None = None,
) -> tuple[TrainingPlan, Notice | None]:
    """The plan made at submit (the one the user was shown) while the dataset is unchanged;
    otherwise a new plan from this scan, with a notice saying what changed."""
    if stored is not None and stored.dataset_fingerprint == scans_fingerprint(scan, reg_scan):
        return stored, None
    plan = plan_from_scan(config, scan, reg_scan)
    if stored is None or not stored.dataset_fingerprint:  # no plan, or one stored before them
        return plan, None
    notice = Notice(
        f"the dataset changed after the job was submitted: planned again "
        f"({plan.total_steps} steps; {stored.total_steps} at submit)"
    )
    return plan, notice


def plan_training(
    config: TrainingConfig, data_dir: Path, reg_data_dir: Path | None = None
) -> TrainingPlan:
    scan = scan_dataset(data_dir, config.caption_extension)
    reg = (
        scan_dataset(reg_data_dir, config.caption_extension, is_reg=True) if reg_data_dir else None
    )
    return plan_from_scan(config, scan, reg)
