"""Tables. The job row is the truth about a job; the broker only carries its id."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back an aware datetime (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: sa.JSON, list[Any]: sa.JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # SHA-256 hex of the bearer token; null once revoked.
    token_digest: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # Keys the HMAC of this user's webhook bodies; made on first use, shown by GET /v1/me.
    webhook_secret: Mapped[str | None] = mapped_column(sa.String(64))
    # GPU-time budget (docs/scheduling.md, "Quotas"): at most `quota_gpu_seconds` of worker
    # time inside any rolling `quota_window_s`; both null means no quota.
    quota_gpu_seconds: Mapped[int | None] = mapped_column(sa.BigInteger)
    quota_window_s: Mapped[int | None] = mapped_column(sa.BigInteger)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    image_count: Mapped[int]
    caption_count: Mapped[int]
    folders: Mapped[list[Any]]
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    warnings: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency"),
        sa.Index("ix_jobs_status_created", "status", "created_at"),
        sa.Index("ix_jobs_owner_created", "owner_id", "created_at"),
        sa.Index("ix_jobs_notify_status", "notify_status"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_id)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16), default=JobStatus.QUEUED)
    base_model: Mapped[str] = mapped_column(sa.String(200))
    # Plain ids, no foreign keys: a dataset may be deleted after its jobs finished.
    dataset_id: Mapped[str] = mapped_column(sa.String(32))
    reg_dataset_id: Mapped[str | None] = mapped_column(sa.String(32))
    params: Mapped[dict[str, Any]]  # normalised Kohya params, as shown to the user
    config: Mapped[dict[str, Any]]  # the trainer's TrainingConfig, as the worker rebuilds it
    resolved: Mapped[dict[str, Any]]  # server-resolved paths the worker needs (vae, weights)
    plan: Mapped[dict[str, Any]]
    progress: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    error_code: Mapped[str | None] = mapped_column(sa.String(32))
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    stop_requested: Mapped[bool] = mapped_column(default=False)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200))
    request_hash: Mapped[str | None] = mapped_column(sa.String(64))
    # Lease: who runs it, when it last said so, and which attempt fences its writes.
    attempt: Mapped[int] = mapped_column(default=0)
    worker_id: Mapped[str | None] = mapped_column(sa.String(200))
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Webhook outbox: "pending" until delivered (or "failed" after the last retry); the
    # dispatcher claims a delivery by moving notify_next_at forward.
    notify_url: Mapped[str | None] = mapped_column(sa.String(2000))
    notify_status: Mapped[str | None] = mapped_column(sa.String(16))
    notify_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    notify_next_at: Mapped[datetime | None]
    # What the job needs and when it ends (docs/estimates.md): the estimate made at submit
    # (trainer.estimate.model, per counted worker), why a queued job waits, the forecast the
    # reconciler keeps current, and the s/step the run measured (the worker learns from it).
    estimate: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    blocked_reason: Mapped[str | None] = mapped_column(sa.String(32))
    estimated_start_at: Mapped[datetime | None]
    estimated_finish_at: Mapped[datetime | None]
    measured_s_per_step: Mapped[float | None]
    # Sharing the GPU (docs/scheduling.md): the policy's tier, an owner's or admin's hold, how
    # often the scheduler suspended it for another user's job (and whether it asks now), and
    # its place in the policy's order, stored at each queue change for the status poll.
    priority: Mapped[str] = mapped_column(sa.String(8), default="normal", server_default="normal")
    held: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    preemptions: Mapped[int] = mapped_column(default=0, server_default="0")
    preempt_requested: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    queue_position: Mapped[int | None]


class GpuUsage(Base):
    """One stretch of worker time held by one attempt of a job: opened at the claim, closed
    when the attempt ends (any outcome, a preemption or a lost lease included). Fair-share
    usage and quotas are sums over these rows; an open row counts up to now."""

    __tablename__ = "gpu_usage"
    __table_args__ = (sa.Index("ix_gpu_usage_user_started", "user_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    job_id: Mapped[str] = mapped_column(sa.String(32), index=True)
    attempt: Mapped[int]
    worker_key: Mapped[str | None] = mapped_column(sa.String(300))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class JobEvent(Base):
    """Ordered per-job log; the integer id is the SSE event id and the audit trail."""

    __tablename__ = "job_events"
    __table_args__ = (sa.Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.String(32))
    attempt: Mapped[int]
    kind: Mapped[str] = mapped_column(sa.String(32))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobMetric(Base):
    __tablename__ = "job_metrics"
    __table_args__ = (sa.Index("ix_job_metrics_job_step", "job_id", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.String(32))
    attempt: Mapped[int]
    step: Mapped[int]
    epoch: Mapped[int]
    loss: Mapped[float]
    avg_loss: Mapped[float]
    lr: Mapped[dict[str, Any]]


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (sa.UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.String(32), index=True)
    name: Mapped[str] = mapped_column(sa.String(500))
    kind: Mapped[str] = mapped_column(sa.String(16))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    epoch: Mapped[int | None]
    step: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QueueState(Base):
    """A single row (id 1): whether workers may start new jobs."""

    __tablename__ = "queue_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    paused: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """One training device, a GPU or a CPU host, as its worker last said (docs/reliability.md,
    "Workers"): what it has, what it is doing, and what it learned about its own speed.

    Keyed by host and GPU UUID (``<host>:cpu`` for a CPU), so a restarted worker finds its row
    and its learned efficiency again; one worker per device."""

    __tablename__ = "workers"

    key: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(300))
    host: Mapped[str] = mapped_column(sa.String(255))
    device: Mapped[str] = mapped_column(sa.String(8))  # "cuda" | "cpu"
    gpu_name: Mapped[str | None] = mapped_column(sa.String(200))
    gpu_uuid: Mapped[str | None] = mapped_column(sa.String(100))
    total_memory_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    free_memory_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    compute_capability: Mapped[str | None] = mapped_column(sa.String(16))
    torch_version: Mapped[str | None] = mapped_column(sa.String(64))
    cuda_version: Mapped[str | None] = mapped_column(sa.String(32))
    driver_version: Mapped[str | None] = mapped_column(sa.String(64))
    peak_flops: Mapped[float | None]
    peak_source: Mapped[str | None] = mapped_column(sa.String(16))  # "table" | "probe"
    # Learned from finished runs (core/workers/model.py: learned): each value is the median
    # of the recent observations kept in `observations` ({"efficiency": [...], "loading":
    # [...], ...}); `runs_learned` counts the runs that taught the efficiency.
    efficiency: Mapped[float]
    allowances_s: Mapped[dict[str, Any]]
    observations: Mapped[dict[str, Any]]
    runs_learned: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(sa.String(16))  # "idle" | "busy" | "offline"
    current_job_id: Mapped[str | None] = mapped_column(sa.String(32))
    process: Mapped[str | None] = mapped_column(sa.String(200))  # the lease's worker_id
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
