"""GET /v1/workers: every user sees what runs where; admins see the device and the model."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class WorkerRead(BaseModel):
    """A counted worker, as every user sees it."""

    name: str
    gpu_name: str | None  # None: a CPU worker
    state: Literal["idle", "busy"]
    current_job_id: str | None


class WorkerAdminRead(WorkerRead):
    """A counted worker with its device and its time model (admins)."""

    key: str
    host: str
    device: Literal["cuda", "cpu"]
    gpu_uuid: str | None
    total_memory_bytes: int  # the GPU's, or the host's RAM on a CPU worker
    free_memory_bytes: int  # at its last heartbeat
    compute_capability: str | None
    torch_version: str | None
    cuda_version: str | None
    driver_version: str | None
    peak_flops: float
    peak_source: Literal["table", "probe"]
    efficiency: float
    allowances_s: dict[str, float]
    runs_learned: int
    process: str | None
    started_at: datetime | None
    seen_at: datetime


class WorkerList(BaseModel):
    items: list[WorkerAdminRead] | list[WorkerRead]
