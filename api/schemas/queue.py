"""GET /v1/queue: the team's view of the shared GPU (docs/scheduling.md). Every user sees
every running and queued job's name, owner and place, never its params, dataset or files."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.jobs import BlockedReason
from core.jobs.submission import Priority


class QueueStateRead(BaseModel):
    """What pausing or resuming the queue left it as."""

    paused: bool


class QueueJobRead(BaseModel):
    """A running or queued job as a colleague sees it."""

    id: str
    name: str | None
    owner: str
    mine: bool = Field(description="the caller's own job")
    base_model: str
    status: Literal["queued", "running"]
    queue_position: int | None = Field(
        description="1-based place in the policy's order; null while running or not yet placed"
    )
    priority: Priority
    held: bool
    blocked_reason: BlockedReason | None = Field(
        description="why a queued job waits; null when it is next in line or running"
    )
    estimated_start_at: datetime | None = Field(description="forecast over the counted workers")
    estimated_finish_at: datetime | None
    created_at: datetime = Field(description="submitted")
    started_at: datetime | None


class QueueWorkerRead(BaseModel):
    """A counted worker: its GPU, what it runs, and the memory in use at its last heartbeat."""

    name: str
    gpu_name: str | None = Field(description="null: a CPU worker")
    state: Literal["idle", "busy"]
    current_job_id: str | None
    memory_used_bytes: int = Field(description="total minus free, at its last heartbeat")
    memory_total_bytes: int = Field(description="the GPU's, or the host's RAM on a CPU worker")


class QueueRead(BaseModel):
    """One page of the queue: running jobs first, then queued ones by position."""

    paused: bool
    scheduler: Literal["fair", "fifo"] = Field(description="the policy (LORABOX_SCHEDULER)")
    running: int = Field(description="jobs running now, on every page")
    queued: int = Field(description="jobs waiting now, on every page")
    workers: list[QueueWorkerRead]
    items: list[QueueJobRead]
    next_cursor: str | None
