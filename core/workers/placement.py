"""The claim-time memory check: does a queued job fit the device's free memory right now?

Submit refused what fits no counted worker's *total* memory with ``vram_headroom_bytes`` to
spare. A claim asks a different question: the card may be shared (a desktop, another
process), so the worker compares the job's ``estimate["peak_vram_bytes"]`` (device bytes,
its allowances for workspace, allocator and CUDA context included) with the device's *free*
memory at that moment, without adding the headroom again: the headroom covers the model's
error once, at submit, and adding it at the claim would leave a job that passed submit on a
card whose display holds a few hundred MB waiting forever.

A job that doesn't fit stays queued with ``blocked_reason = "gpu_memory"`` (one ``blocked``
event when it starts waiting) and the worker takes the next job in policy order that fits
(``core/jobs/claim.py``); the reconciler wakes an idle worker again at its next pass, when
memory may have been freed. Every claim is the same conditional UPDATE, so nothing runs twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import Job, JobStatus
from core.jobs.events import record_event

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
    *,
    job_id: str,
    free_bytes: int,
    worker: str,
    reason: str = GPU_MEMORY,
) -> bool:
    """Leaves a queued job waiting for memory; False when it is no longer queued."""
    row = session.execute(
        sa.select(Job.blocked_reason, Job.attempt, Job.estimate).where(
            Job.id == job_id, Job.status == JobStatus.QUEUED
        )
    ).first()
    if row is None:
        return False
    if row.blocked_reason == reason:  # waiting already: one event when the wait starts
        return True
    result = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(blocked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    data = {"reason": reason, "needed_bytes": needed_bytes(row.estimate),
            "free_bytes": free_bytes, "worker": worker}  # fmt: skip
    record_event(session, job_id, BLOCKED_EVENT, data, attempt=row.attempt)
    return True
