"""Job service: submit (idempotent, capped), read, list, cancel, stop, delete. HTTP-free."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.tables import Artifact, Job, JobEvent, JobMetric, JobStatus, User, new_id, utcnow
from core.errors import (
    Conflict,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    Problem,
    TooManyQueued,
)
from core.jobs.disk import estimate_job_bytes, free_bytes
from core.jobs.events import record_event
from core.jobs.naming import job_output_name
from core.jobs.priorities import check_priority
from core.jobs.submission import JobCreate
from core.jobs.validation import ValidatedJob, validate_job
from core.settings import Settings

MAX_PAGE = 200


def _check_caps(session: Session, settings: Settings, user: User, valid: ValidatedJob) -> None:
    queued = session.scalar(
        sa.select(sa.func.count())
        .select_from(Job)
        .where(Job.owner_id == user.id, Job.status == JobStatus.QUEUED)
    )
    if (queued or 0) >= settings.max_queued_per_user:
        raise TooManyQueued(
            f"you already have {queued} queued jobs (limit {settings.max_queued_per_user})"
        )
    need = estimate_job_bytes(valid.config, valid.training_plan)
    free = free_bytes(settings.jobs_dir) - settings.disk_reserve_bytes
    if need > free:
        raise InsufficientStorage(
            f"the job's files are estimated at {need} bytes but only {max(free, 0)} are free"
        )


def _existing(session: Session, user: User, key: str, digest: str) -> Job | None:
    job = session.scalar(sa.select(Job).where(Job.owner_id == user.id, Job.idempotency_key == key))
    if job is not None and job.request_hash != digest:
        raise Conflict("this Idempotency-Key was used with a different request body")
    return job


def submit_job(
    session: Session,
    settings: Settings,
    *,
    user: User,
    request: JobCreate,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Validates and inserts a queued job; returns (job, created). Caller commits, then enqueues."""
    digest = request.digest()
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 200:
            raise InvalidInput([Problem(("header", "idempotency-key"), "1 to 200 characters")])
        previous = _existing(session, user, idempotency_key, digest)
        if previous is not None:
            return previous, False
    check_priority(user, request.priority)
    valid = validate_job(session, settings, user=user, request=request)
    _check_caps(session, settings, user, valid)
    job_id = new_id()
    config = valid.config
    if stem := job_output_name(request.params, job_name=request.name, job_id=job_id):
        config = config.model_copy(update={"output_name": stem})
    job = Job(
        id=job_id,
        owner_id=user.id,
        name=request.name,
        base_model=request.base_model,
        dataset_id=request.dataset_id,
        reg_dataset_id=request.reg_dataset_id,
        params=valid.normalized,
        config=config.model_dump(mode="json"),
        resolved=valid.resolved,
        plan=valid.plan,
        estimate=valid.estimate,
        progress=None,
        idempotency_key=idempotency_key,
        request_hash=digest,
        notify_url=request.notify_url,
        notify_status="pending" if request.notify_url else None,
        priority=request.priority,
    )
    try:
        with session.begin_nested():  # a concurrent submit with the same key loses cleanly
            session.add(job)
            session.flush()
    except IntegrityError:
        if idempotency_key is None:
            raise
        previous = _existing(session, user, idempotency_key, digest)
        if previous is None:
            raise
        return previous, False
    record_event(session, job.id, "queued", {"status": "queued"}, attempt=0)
    return job, True


def get_job(session: Session, *, user: User, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or not (user.is_admin or job.owner_id == user.id):
        raise NotFound("job not found")
    return job


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, job_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput([Problem(("query", "cursor"), "invalid cursor")]) from exc


def list_jobs(
    session: Session,
    *,
    user: User,
    status: str | None = None,
    all_users: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[Sequence[Job], str | None]:
    """Newest first; keyset-paginated so a page is stable while jobs are added."""
    query = sa.select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if not (all_users and user.is_admin):
        query = query.where(Job.owner_id == user.id)
    if status is not None:
        query = query.where(Job.status == status)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where(
            sa.or_(Job.created_at < created, sa.and_(Job.created_at == created, Job.id < job_id))
        )
    limit = max(1, min(limit, MAX_PAGE))
    rows = session.scalars(query.limit(limit + 1)).all()
    page = rows[:limit]
    return page, _encode_cursor(page[-1]) if len(rows) > limit else None


def _finish_from_queue(session: Session, job: Job, kind: str) -> bool:
    """Cancels a still-queued job; False if a worker claimed it meanwhile."""
    now = utcnow()
    result = session.execute(
        sa.update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(job)
        return False
    session.refresh(job)
    record_event(session, job.id, kind, {"status": "cancelled"}, attempt=job.attempt)
    # Every end is a `finished` entry in the log: event streams and webhooks wait for it.
    finished = {"status": "cancelled", "error_code": None, "message": "cancelled while queued"}
    record_event(session, job.id, "finished", finished, attempt=job.attempt)
    return True


def cancel_job(session: Session, *, user: User, job_id: str) -> Job:
    """Queued: never starts. Running: the worker stops it within a step or setup phase (or
    kills its trainer after ``cancel_grace_s``). Twice, even at once: harmless, one request
    logged. Succeeded or failed: 409, also when the job ended as the cancel came."""
    job = get_job(session, user=user, job_id=job_id)
    if job.status == JobStatus.QUEUED and _finish_from_queue(session, job, "cancelled"):
        return job
    if job.status == JobStatus.RUNNING:
        result = session.execute(
            sa.update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.RUNNING, ~Job.cancel_requested)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            record_event(session, job.id, "cancel_requested", {}, attempt=job.attempt)
        session.refresh(job)
        if job.status == JobStatus.QUEUED and _finish_from_queue(session, job, "cancelled"):
            return job  # re-queued (its worker was lost) just before
    if job.status in (JobStatus.RUNNING, JobStatus.CANCELLED):
        return job
    raise Conflict(f"job already {job.status}")


def stop_job(session: Session, *, user: User, job_id: str) -> Job:
    """Running: finish early and keep the LoRA. Queued: nothing to keep, so it is cancelled."""
    job = get_job(session, user=user, job_id=job_id)
    if job.status == JobStatus.QUEUED and _finish_from_queue(session, job, "cancelled"):
        return job
    if job.status == JobStatus.RUNNING:
        if not (job.stop_requested or job.cancel_requested):
            job.stop_requested = True
            record_event(session, job.id, "stop_requested", {}, attempt=job.attempt)
        return job
    raise Conflict(f"job already {job.status}")


def delete_job(session: Session, settings: Settings, *, user: User, job_id: str) -> None:
    job = get_job(session, user=user, job_id=job_id)
    if not JobStatus(job.status).finished:
        raise Conflict(f"job is {job.status}: cancel it first")
    for model in (Artifact, JobEvent, JobMetric):
        session.execute(sa.delete(model).where(model.job_id == job.id))
    session.delete(job)
    session.flush()
    shutil.rmtree(settings.jobs_dir / job.id, ignore_errors=True)


def owner_names(session: Session, owner_ids: set[int]) -> dict[int, str]:
    rows = session.execute(sa.select(User.id, User.name).where(User.id.in_(owner_ids)))
    return {row.id: row.name for row in rows}


def error_of(job: Job) -> dict[str, Any] | None:
    if job.error_code is None:
        return None
    return {"code": job.error_code, "message": job.error_message or ""}
