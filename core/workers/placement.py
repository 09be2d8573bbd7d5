"""The claim-time memory check: does a queued job fit the device's free memory right now?

Submit refused what fits no counted worker's *total* memory with ``vram_headroom_bytes`` to
spare. A claim asks a different question: the card may be shared (a desktop, another
process), so the worker compares the job's ``estimate["peak_vram_bytes"]`` (device bytes,
its allowances for workspace, allocator and CUDA context included) with the device's *free*
memory at that moment, without adding the headroom again: the headroom covers the model's
error once, at submit, and adding it at the claim would leave a job that passed submit on a
card whose display holds a few hundred MB waiting forever.

A job that doesn't fit stays queued with ``blocked_reason = "gpu_memory"`` (one ``blocked``
event when it starts waiting) and its message, consumed by this delivery, is sent again by
the reconciler ``blocked_retry_s`` later (``resend_unclaimed`` reads ``heartbeat_at`` as the
time of the last send); the worker then takes the first queued job, in submission order,
that fits. Every claim is the same conditional UPDATE, so nothing runs twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import Job, JobStatus, utcnow
from core.jobs.events import record_event
from core.settings import Settings

GPU_MEMORY = "gpu_memory"
BLOCKED_EVENT = "blocked"


def needed_bytes(estimate: Mapping[str, Any] | None) -> int | None:
    """The job's device bytes, or None for a job without an estimate (older jobs)."""
    if not estimate:
        return None
    value = estimate.get("peak_vram_bytes")
    return int(value) if isinstance(value, int | float) and value > 0 else None


def fits(estimate: Mapping[str, Any] | None, free_bytes: int | None) -> bool:
    """True unless both are known and the job needs more than is free: a job without an
    estimate, or a device whose free memory can't be read, is not held back."""
    need = needed_bytes(estimate)
    return need is None or free_bytes is None or need <= free_bytes


def block(
    session: Session,
    settings: Settings,
    *,
    job_id: str,
    free_bytes: int,
    worker: str,
    reason: str = GPU_MEMORY,
) -> bool:
    """Leaves a queued job waiting for memory, its next message due in ``blocked_retry_s``.

    False when the job is no longer queued (claimed by another worker, cancelled)."""
    now = utcnow()
    resend_at = now - timedelta(seconds=settings.requeue_after_s - settings.blocked_retry_s)
    row = session.execute(
        sa.select(Job.blocked_reason, Job.attempt, Job.estimate).where(
            Job.id == job_id, Job.status == JobStatus.QUEUED
        )
    ).first()
    if row is None:
        return False
    result = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(blocked_reason=reason, heartbeat_at=resend_at)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    if row.blocked_reason != reason:  # one event when the wait starts, not one per retry
        data = {"reason": reason, "needed_bytes": needed_bytes(row.estimate),
                "free_bytes": free_bytes, "worker": worker}  # fmt: skip
        record_event(session, job_id, BLOCKED_EVENT, data, attempt=row.attempt)
    return True


def fitting_queued(
    session: Session, free_bytes: int | None, *, skip: Collection[str] = ()
) -> Iterator[str]:
    """Queued jobs that fit ``free_bytes``, in submission order (``created_at``, ``id``, as
    the queue positions count them)."""
    rows = session.execute(
        sa.select(Job.id, Job.estimate)
        .where(Job.status == JobStatus.QUEUED)
        .order_by(Job.created_at, Job.id)
        .execution_options(yield_per=100)
    )
    for job_id, estimate in rows:
        if job_id not in skip and fits(estimate, free_bytes):
            yield job_id
