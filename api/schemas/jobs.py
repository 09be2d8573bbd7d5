from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

# The request body is the core's own submission model: the service takes it as it comes.
from core.jobs.submission import JobCreate as JobCreate
from core.jobs.submission import Priority

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
# Why a queued job waits (docs/scheduling.md): held by its owner or an admin, its owner over
# quota, the queue paused, no worker with the memory free now, or none that could ever hold it.
BlockedReason = Literal["held", "quota", "paused", "gpu_memory", "no_fitting_worker"]


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

    peak_vram_bytes: int = Field(
        description="GPU memory at the run's peak (a step or caching), allowances included"
    )
    parts: dict[str, int] = Field(
        description="bytes at the peak: weights, lora, gradients, optimizer, activations, "
        "temporaries, and the allowances workspace, allocator, cuda_context"
    )
    phase: str | None = Field(
        default=None,
        description="the phase that holds the peak: step, caching_latents or caching_text",
    )
    phases: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="each phase's parts (no allowances): step, and the caching it does",
    )
    notes: list[str] = Field(
        default_factory=list, description="what may behave otherwise on a GPU (paged state)"
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
    blocked_reason: BlockedReason | None = Field(
        description="why a queued job waits; null when it is next in line or not queued"
    )
    priority: Priority = Field(description="the scheduler's tier (docs/scheduling.md)")
    held: bool = Field(description="held by its owner or an admin: it waits until released")
    preemptions: int = Field(
        description="times the scheduler suspended it for another user's job; it resumed exactly"
    )
    estimated_start_at: datetime | None = Field(description="forecast over the counted workers")
    estimated_finish_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class JobUpdate(BaseModel):
    """A queued job's place in the scheduler (docs/scheduling.md, "Priorities and holds"):
    one field or both. Users may hold and release their own jobs and set low or normal; only
    admins set high or change other users' jobs."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # Absent means "leave it"; null is not a value (the document says neither is nullable,
    # and states no default: there is none to send).
    priority: Priority | SkipJsonSchema[None] = Field(
        default=None, description="the new tier", json_schema_extra=_no_default
    )
    held: bool | SkipJsonSchema[None] = Field(
        default=None,
        description="true: hold it (it waits until released); false: release it",
        json_schema_extra=_no_default,
    )

    @field_validator("priority", "held", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("null is not a value: leave the field out to keep it")
        return value

    @model_validator(mode="after")
    def _something(self) -> JobUpdate:
        if not self.model_fields_set:
            raise ValueError("give priority, held or both")
        return self


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
    prompt: str | None = Field(
        default=None, description="a sample's prompt, as the trainer rendered it; null otherwise"
    )


class ArtifactList(BaseModel):
    items: list[ArtifactRead]
