from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

# The request body is the core's own submission model: the service takes it as it comes.
from core.jobs.submission import JobCreate as JobCreate

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class BucketRead(BaseModel):
    resolution: tuple[int, int]
    count: int = Field(description="images x repeats in this bucket")


class WarningRead(BaseModel):
    field: str | None
    message: str


class PlanRead(BaseModel):
    total_steps: int
    batches_per_epoch: int
    epochs: int
    warmup_steps: int
    images_x_repeats: int
    buckets: list[BucketRead]
    warnings: list[WarningRead]


class WorkerFitRead(BaseModel):
    worker: str
    fits: bool = Field(description="it holds the job with LORABOX_VRAM_HEADROOM_BYTES to spare")
    headroom_bytes: int = Field(description="the worker's memory left at the job's peak")
    s_per_step: float
    total_s: float = Field(description="steps x s/step plus loading, caching, sampling, saving")


class EstimateRead(BaseModel):
    """What the job needs and how long it takes, estimated at submit (docs/estimates.md)."""

    peak_vram_bytes: int = Field(description="GPU memory at the step's peak, allowances included")
    parts: dict[str, int] = Field(
        description="bytes at the peak: weights, lora, gradients, optimizer, activations, "
        "temporaries, and the allowances workspace, allocator, cuda_context"
    )
    step_flops: int = Field(description="FLOPs of one optimizer step")
    s_per_step: float | None = Field(description="on the fitting worker that finishes soonest")
    total_s: float | None = Field(description="the whole job on that worker; null if none fits")
    per_worker: list[WorkerFitRead]


class ValidationRead(PlanRead):
    """The plan, and what the job would need (null when it can't be estimated)."""

    estimate: EstimateRead | None


class ProgressRead(BaseModel):
    """Live progress. Scripts rely on these names: they stay stable. A null field is not
    known yet (or, for GPU memory, not measured off CUDA)."""

    phase: Literal["queued", "loading", "caching", "training", "saving", "sampling"] | None = Field(
        default=None, description="what the job is doing now"
    )
    step: int | None = Field(default=None, description="optimizer steps done")
    total_steps: int | None = Field(default=None, description="optimizer steps planned")
    epoch: int | None = Field(default=None, description="the current epoch, 1-based")
    total_epochs: int | None = Field(default=None, description="epochs planned")
    loss: float | None = Field(default=None, description="the last step's loss")
    avg_loss: float | None = Field(
        default=None, description="Kohya's moving average of the loss over the last epoch's steps"
    )
    lr: dict[str, float] | None = Field(
        default=None, description="learning rate per parameter group (unet, textencoder, ...)"
    )
    samples_per_s: float | None = Field(default=None, description="training images per second")
    s_per_step: float | None = Field(default=None, description="seconds per optimizer step")
    elapsed_s: float | None = Field(default=None, description="seconds since the run started")
    eta_s: float | None = Field(default=None, description="estimated seconds to the last step")
    peak_gpu_mem_bytes: int | None = Field(
        default=None, description="peak CUDA memory allocated; null off CUDA"
    )
    max_norm: dict[str, float] | None = Field(
        default=None,
        description="scale_weight_norms at the last step, as Kohya logs it: "
        "max_norm/keys_scaled, max_norm/average_key_norm, max_norm/max_key_norm; null when off",
    )


class ErrorRead(BaseModel):
    code: str = Field(
        description="invalid_dataset, base_model_missing, nan_loss, cuda_oom, disk_full, "
        "invalid_resume_state, "
        "worker_lost or trainer_error"
    )
    message: str


class JobRead(BaseModel):
    id: str
    name: str | None
    owner: str
    status: JobStatusName
    queue_position: int | None = Field(description="1-based; null unless queued")
    attempt: int
    cancel_requested: bool
    base_model: str
    dataset_id: str
    params: dict[str, Any] = Field(description="the normalised Kohya payload")
    plan: PlanRead
    progress: ProgressRead
    error: ErrorRead | None
    estimate: EstimateRead | None = Field(description="null for jobs submitted before estimates")
    blocked_reason: Literal["held", "quota", "paused", "gpu_memory", "no_fitting_worker"] | None = (
        Field(description="why a queued job waits; null when it is next in line or not queued")
    )
    estimated_start_at: datetime | None = Field(description="forecast over the counted workers")
    estimated_finish_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    items: list[JobRead]
    next_cursor: str | None


class ArtifactRead(BaseModel):
    name: str = Field(description="path relative to the job")
    kind: Literal["lora", "checkpoint", "state", "sample", "tensorboard", "log"]
    size_bytes: int
    sha256: str
    epoch: int | None
    step: int | None


class ArtifactList(BaseModel):
    items: list[ArtifactRead]
