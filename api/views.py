"""Job rows as the API's JSON (shared by the routes and, later, the event stream)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.schemas.jobs import ArtifactList, ArtifactRead, JobRead, PlanRead, ProgressRead
from api.schemas.queue import QueueJobRead, QueueRead, QueueWorkerRead
from api.schemas.workers import WorkerAdminRead, WorkerList, WorkerRead
from core.db.tables import Artifact, Job, JobEvent, JobStatus, User
from core.errors import NotFound
from core.jobs.queue import queue_position
from core.jobs.service import error_of, owner_names
from core.jobs.team_queue import QueuePage
from core.workers import WorkerInfo


def _progress(job: Any) -> ProgressRead:
    if job.progress:
        return ProgressRead.model_validate(job.progress)
    return ProgressRead(phase="queued" if job.status == JobStatus.QUEUED else None)


def job_read(job: Any, *, owner: str, position: int | None) -> JobRead:
    """``job``: a Job row object, or a Core row with the same columns."""
    waiting_or_running = job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    return JobRead(
        id=job.id,
        name=job.name,
        owner=owner,
        status=job.status,
        queue_position=position,
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        base_model=job.base_model,
        dataset_id=job.dataset_id,
        params=job.params,
        plan=PlanRead.model_validate(job.plan),
        progress=_progress(job),
        error=error_of(job),  # type: ignore[arg-type]
        estimate=job.estimate,
        # The forecast is kept for queued and running jobs only (core/jobs/forecast.py); an
        # ended job's last one is history, not a forecast.
        priority=job.priority,
        held=job.held,
        preemptions=job.preemptions,
        blocked_reason=job.blocked_reason if job.status == JobStatus.QUEUED else None,
        estimated_start_at=job.estimated_start_at if waiting_or_running else None,
        estimated_finish_at=job.estimated_finish_at if waiting_or_running else None,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def one_job(session: Session, job: Job) -> JobRead:
    owners = owner_names(session, {job.owner_id})
    return job_read(job, owner=owners.get(job.owner_id, "?"), position=queue_position(session, job))


_JOBS, _USERS = Job.__table__, User.__table__
# What `job_read` shows, and the owner for the access check: not the worker's `config` and
# `resolved` (JSON the poll would parse for nothing) nor the lease and webhook columns.
_SHOWN = ("id", "owner_id", "name", "status", "attempt", "cancel_requested", "base_model",
          "dataset_id", "params", "plan", "progress", "error_code", "error_message",
          "created_at", "started_at", "finished_at", "estimate", "blocked_reason",
          "estimated_start_at", "estimated_finish_at", "priority", "held",
          "preemptions")  # fmt: skip
# One round trip per poll: the job, its owner's name and, when queued, its stored place
# (core/jobs/forecast.py: refresh_forecast writes it at each queue change). Core tables
# (no ORM entities) and a bind parameter: built once, it skips the ORM's compile step and the
# per-request cache key of a fresh ``where()``.
_POLL = (
    sa.select(
        *(_JOBS.c[name] for name in _SHOWN),
        _USERS.c.name.label("owner_name"),
        sa.case((_JOBS.c.status == JobStatus.QUEUED, _JOBS.c.queue_position)).label("position"),
    )
    .join(_USERS, _USERS.c.id == _JOBS.c.owner_id)
    .where(_JOBS.c.id == sa.bindparam("job_id"))
)


def fetch_job_read(conn: sa.Connection, *, user: User, job_id: str) -> JobRead:
    """One job for polling: one Core query on a plain connection, no ORM session."""
    row = conn.execute(_POLL, {"job_id": job_id}).first()
    if row is None or not (user.is_admin or row.owner_id == user.id):
        raise NotFound("job not found")
    return job_read(row, owner=row.owner_name, position=row.position)


def many_jobs(session: Session, jobs: Sequence[Job]) -> list[JobRead]:
    owners = owner_names(session, {j.owner_id for j in jobs})
    positions: dict[str, int] = {}
    if any(j.status == JobStatus.QUEUED for j in jobs):
        positions = {j.id: p for j in jobs if (p := queue_position(session, j)) is not None}
    return [
        job_read(j, owner=owners.get(j.owner_id, "?"), position=positions.get(j.id)) for j in jobs
    ]


def artifact_read(artifact: Artifact, *, prompt: str | None = None) -> ArtifactRead:
    return ArtifactRead(
        name=artifact.name,
        kind=artifact.kind,  # type: ignore[arg-type]
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        epoch=artifact.epoch,
        step=artifact.step,
        prompt=prompt,
    )


def artifact_list(session: Session, job_id: str, artifacts: Sequence[Artifact]) -> ArtifactList:
    """The artifacts, each sample with its prompt: the trainer reports it with the file
    (``trainer/sampling/samples.py: sample_metadata``) and the job's event log keeps it."""
    prompts: dict[str, str | None] = {}
    if any(a.kind == "sample" for a in artifacts):
        events = session.scalars(
            sa.select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.kind == "artifact")
        )
        prompts = {data.get("path"): (data.get("metadata") or {}).get("prompt")
                   for data in events if data.get("kind") == "sample"}  # fmt: skip
    return ArtifactList(items=[artifact_read(a, prompt=prompts.get(a.name)) for a in artifacts])


def queue_read(
    page: QueuePage, *, user: User, workers: Sequence[WorkerInfo], scheduler: str
) -> QueueRead:
    """The team's queue: a colleague's job shows its name and place, never its contents."""
    items = [
        QueueJobRead(
            id=row.id,
            name=row.name,
            owner=row.owner_name,
            mine=row.owner_id == user.id,
            base_model=row.base_model,
            status=row.status,
            queue_position=row.queue_position if row.status == JobStatus.QUEUED else None,
            priority=row.priority,
            held=row.held,
            blocked_reason=row.blocked_reason if row.status == JobStatus.QUEUED else None,
            estimated_start_at=row.estimated_start_at,
            estimated_finish_at=row.estimated_finish_at,
            created_at=row.created_at,
            started_at=row.started_at,
        )
        for row in page.rows
    ]
    panels = [
        QueueWorkerRead(
            name=w.name,
            gpu_name=w.gpu_name,
            state=w.state,  # type: ignore[arg-type]
            current_job_id=w.current_job_id,
            memory_used_bytes=max(0, w.total_memory_bytes - w.free_memory_bytes),
            memory_total_bytes=w.total_memory_bytes,
        )
        for w in workers
    ]
    return QueueRead(
        paused=page.paused, scheduler=scheduler, running=page.running,  # type: ignore[arg-type]
        queued=page.queued, workers=panels, items=items, next_cursor=page.next_cursor,
    )  # fmt: skip


def worker_list(workers: Sequence[WorkerInfo], *, admin: bool) -> WorkerList:
    """Admins see every field; users the name, GPU, state and current job."""
    if admin:
        return WorkerList(items=[WorkerAdminRead.model_validate(w, from_attributes=True)
                                 for w in workers])  # fmt: skip
    return WorkerList(items=[WorkerRead.model_validate(w, from_attributes=True) for w in workers])
