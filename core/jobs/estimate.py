"""What a job needs of a GPU and how long it takes, known before it queues.

The memory and FLOPs come from the torch-free fitted model (``trainer.estimate.model``,
checked against traces of the trainer's real step: docs/estimates.md); the time from each
counted worker's peak and learned efficiency (``core.workers``). The service refuses a job
no counted worker can hold (``does_not_fit``), naming the changes that would fit, each
checked with the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.catalog import ModelInfo
from core.jobs.disk import saves_planned
from core.workers import WorkerInfo, job_seconds, seconds_per_step
from trainer.config import TrainingConfig
from trainer.estimate.architecture import Architecture
from trainer.estimate.model import PARTS, Footprint, estimate_footprint, memory_notes
from trainer.models.configs import SDXL_BASE_CONFIG
from trainer.plan import TrainingPlan
from trainer.sampling.prompts import prompt_lines

GIB = 2**30


@dataclass(frozen=True)
class WorkerFit:
    worker: str
    fits: bool
    headroom_bytes: int  # what the worker's memory leaves once the job holds its peak
    s_per_step: float
    total_s: float


@dataclass(frozen=True)
class JobEstimate:
    peak_vram_bytes: int  # the device's share: the traced parts plus the allowances
    parts: dict[str, int]  # at the peak of the phase that holds most
    phase: str  # that phase: "step", "caching_latents" or "caching_text"
    phases: dict[str, dict[str, int]]  # each phase's six traced parts (no allowances)
    notes: tuple[str, ...]  # what may behave otherwise on a GPU (paged optimizer state)
    step_flops: int
    s_per_step: float | None  # on the fitting worker that finishes it soonest; None if none
    total_s: float | None
    per_worker: tuple[WorkerFit, ...]
    # What the forecast needs to time the job on a worker that joins later.
    workload: dict[str, int]

    def largest_parts(self, share: float = 0.05) -> str:
        """The traced parts holding at least ``share`` of the peak, in GiB: why it is that
        big (the allowances follow from the peak)."""
        big = [(k, v) for k, v in self.parts.items()
               if k in PARTS and v >= share * self.peak_vram_bytes]  # fmt: skip
        return ", ".join(f"{k} {v / GIB:.1f}" for k, v in big) + " GiB"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"per_worker": [asdict(w) for w in self.per_worker]}


@dataclass(frozen=True)
class JobShape:
    """What the estimate reads besides the config: the model's architecture and the plan."""

    architecture: Architecture
    plan: TrainingPlan
    image_count: int

    @property
    def largest_bucket(self) -> tuple[int, int] | None:
        if not self.plan.buckets:
            return None
        biggest = max(self.plan.buckets, key=lambda b: b.resolution[0] * b.resolution[1])
        return biggest.resolution


def config_dir_of(model: ModelInfo) -> Path:
    """The diffusers configs the worker builds ``model`` from (trainer.models.configs:
    config_dir_for): its own folder, a ``NAME.config/`` beside it, or the shipped SDXL."""
    if model.format == "diffusers":
        return model.path
    return model.config_dir or SDXL_BASE_CONFIG


@lru_cache(maxsize=32)
def _architecture(config_dir: Path, mtime_ns: int) -> Architecture:
    return Architecture.from_config_dir(config_dir)


def architecture_of(model: ModelInfo) -> Architecture:
    """Read once per config folder (and again when its unet config changes)."""
    folder = config_dir_of(model)
    return _architecture(folder, (folder / "unet" / "config.json").stat().st_mtime_ns)


def footprint(config: TrainingConfig, shape: JobShape) -> Footprint:
    return estimate_footprint(
        config,
        shape.architecture,
        bucket=shape.largest_bucket,
        cached_text_items=shape.image_count if config.cache_text_encoder_outputs else 0,
    )


def samples_planned(config: TrainingConfig, plan: TrainingPlan) -> int:
    """Images sampled in the run: prompts x sampling points (``sample_every_n_epochs`` wins,
    as in trainer/sampling/samples.py)."""
    prompts = len(prompt_lines(config.sample_prompts)) if config.sample_prompts else 0
    if config.sample_every_n_epochs:
        points = plan.epochs // config.sample_every_n_epochs
    elif config.sample_every_n_steps:
        points = plan.total_steps // config.sample_every_n_steps
    else:
        points = 0
    return prompts * points


def worker_fit(
    worker: WorkerInfo,
    device_bytes: int,
    step_flops: int,
    steps: int,
    samples: int,
    saves: int,
    *,
    headroom_bytes: int,
    cached_images: int = 0,
) -> WorkerFit:
    """Whether ``worker`` can hold the job, and how long the job takes there."""
    s_per_step = seconds_per_step(step_flops, worker)
    total = job_seconds(
        total_steps=steps, s_per_step=s_per_step, worker=worker, samples=samples, saves=saves,
        cached_images=cached_images,
    )  # fmt: skip
    spare = worker.total_memory_bytes - device_bytes
    return WorkerFit(worker.name, spare >= headroom_bytes, spare, round(s_per_step, 4), total)


def estimate_job(
    config: TrainingConfig,
    shape: JobShape,
    workers: Sequence[WorkerInfo],
    *,
    headroom_bytes: int,
) -> JobEstimate:
    """The job's footprint, and on each counted worker whether it fits and how long it takes."""
    step = footprint(config, shape)
    samples, saves = samples_planned(config, shape.plan), saves_planned(config, shape.plan)
    cached = shape.image_count if config.cache_latents else 0
    fits = [
        worker_fit(
            worker, step.device_bytes, step.step_flops, shape.plan.total_steps, samples, saves,
            headroom_bytes=headroom_bytes, cached_images=cached,
        )
        for worker in workers
    ]  # fmt: skip
    fitting = [w for w in fits if w.fits]
    best = min(fitting, key=lambda w: w.total_s) if fitting else None
    return JobEstimate(
        peak_vram_bytes=step.device_bytes,
        parts=dict(step.parts),
        phase=step.phase,
        phases={name: dict(parts) for name, parts in step.phases.items()},
        notes=tuple(memory_notes(config)),
        step_flops=step.step_flops,
        s_per_step=best.s_per_step if best else None,
        total_s=best.total_s if best else None,
        per_worker=tuple(fits),
        workload={
            "steps": shape.plan.total_steps,
            "samples": samples,
            "saves": saves,
            "cached_images": cached,
        },  # fmt: skip
    )
