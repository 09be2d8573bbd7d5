"""One job, start to finish: wait out a pause, claim, supervise the trainer, record the end.

The database decides whether a job runs: the claim is a conditional UPDATE (queued ->
running, attempt + 1), so a redelivered or duplicate message for a job that is running or
finished does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from core.db import Artifact, Database, Job
from core.db.tables import JobStatus, utcnow
from core.jobs.artifacts import LOG_NAME, forget_lost_artifacts, register_artifact
from core.jobs.broker import Broker, send_or_defer
from core.jobs.events import record_event
from core.jobs.queue import is_paused
from core.jobs.recovery import release
from core.settings import Settings, get_settings
from trainer.config import TrainingConfig
from trainer.job import TrainingJob
from trainer.plan import TrainingPlan
from worker.child import TrainerLaunch, train_in_child
from worker.relay import Fenced, fenced_update
from worker.supervisor import Outcome, Supervisor, Target, shutdown_requested

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db: Database
    worker_id: str
    broker: Broker

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> WorkerContext:
        settings = settings or get_settings()
        settings.ensure_dirs()
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "any")
        worker_id = f"{socket.gethostname()}:{os.getpid()}:gpu{gpu}"
        db = Database.for_settings(settings, pool_size=2)
        return cls(settings, db, worker_id, Broker(settings))


def wait_while_paused(ctx: WorkerContext, job_id: str) -> bool:
    """Holds the message (and so the GPU's place in line) while the queue is paused."""
    while True:
        with ctx.db.reading() as session:
            status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
            paused = is_paused(session)
        if status != JobStatus.QUEUED:
            return False
        if not paused:
            return True
        if shutdown_requested.is_set():  # this message is acked on return: send a new one
            send_or_defer(ctx.broker, ctx.db, ctx.settings, job_id)
            return False
        time.sleep(ctx.settings.pause_poll_interval_s)


def claim(ctx: WorkerContext, job_id: str) -> int | None:
    """queued -> running for this worker; the new attempt number, or None if not ours."""
    now = utcnow()
    with ctx.db.writing() as session:
        result = session.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.RUNNING,
                attempt=Job.attempt + 1,
                worker_id=ctx.worker_id,
                heartbeat_at=now,
                started_at=now,
                progress={"phase": "loading"},
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        attempt = int(session.scalar(sa.select(Job.attempt).where(Job.id == job_id)) or 0)
        record_event(
            session,
            job_id,
            "started",
            {"worker_id": ctx.worker_id, "attempt": attempt},
            attempt=attempt,
        )
        if attempt > 1:  # an earlier attempt's orphaned trainer may have pruned files unrecorded
            for name in forget_lost_artifacts(session, ctx.settings, job_id):
                log.warning("job %s: %s was listed but its file is gone; unlisted", job_id, name)
                lost = {"path": name, "lost": True}
                record_event(session, job_id, "artifact_removed", lost, attempt=attempt)
        return attempt


def trainer_launch(ctx: WorkerContext, job_id: str) -> TrainerLaunch:
    """The trainer's job from the row, typed once here and pickled to the trainer as is."""
    s = ctx.settings
    with ctx.db.reading() as session:
        job = session.get(Job, job_id)
        assert job is not None
        resolved = dict(job.resolved)
        out = s.jobs_dir / job.id

        def model(key: str) -> Path | None:
            return s.models_dir / resolved[key] if resolved.get(key) else None

        weights = resolved.get("network_weights")
        training = TrainingJob(
            config=TrainingConfig.model_validate(job.config),
            base_model=s.models_dir / resolved["base_model"],
            base_config=model("base_config"),
            vae=model("vae"),
            network_weights=s.jobs_dir / weights if weights else None,
            data_dir=s.datasets_dir / job.dataset_id,
            reg_data_dir=s.datasets_dir / job.reg_dataset_id if job.reg_dataset_id else None,
            output_dir=out,
            resume_state=_latest_state(session, s, job.id),
            plan=TrainingPlan.from_dict(job.plan),
        )
        return TrainerLaunch(job_id=job.id, job=training, log_path=out / LOG_NAME)


def _latest_state(session: Any, settings: Settings, job_id: str) -> Path | None:
    """The newest training state an earlier attempt saved, for the trainer to resume from."""
    name = session.scalar(
        sa.select(Artifact.name)
        .where(Artifact.job_id == job_id, Artifact.kind == "state")
        .order_by(Artifact.step.desc().nulls_last(), Artifact.id.desc())
        .limit(1)
    )
    return settings.jobs_dir / job_id / name if name else None


def finish(
    ctx: WorkerContext, job_id: str, attempt: int, outcome: Outcome, renewed_at: float
) -> None:
    """Records the end, retrying while the database is unreachable, within the grace the
    lease still gives (counted from its last renewal, as the supervisor's fence is)."""
    deadline = renewed_at + ctx.settings.lease_timeout_s * 0.75
    while True:
        try:
            _record_end(ctx, job_id, attempt, outcome)
            return
        except OperationalError as exc:
            if time.monotonic() >= deadline:
                log.error("job %s: its end went unrecorded (%s); lease expires", job_id, exc)
                return
            time.sleep(min(1.0, ctx.settings.heartbeat_interval_s))


def _record_end(ctx: WorkerContext, job_id: str, attempt: int, outcome: Outcome) -> None:
    if outcome.release is not None:
        with ctx.db.writing() as session:
            status = release(
                session, ctx.settings, job_id=job_id, attempt=attempt, reason=outcome.release,
                lost=outcome.release != "shutdown", detail=outcome.message,
            )  # fmt: skip
        if status == JobStatus.QUEUED:
            send_or_defer(ctx.broker, ctx.db, ctx.settings, job_id)
        return
    if outcome.status is None:
        return
    with ctx.db.writing() as session:
        try:
            fenced_update(
                session,
                job_id,
                attempt,
                status=outcome.status,
                error_code=outcome.error_code,
                error_message=outcome.message,
                finished_at=utcnow(),
            )
        except Fenced:
            return
        register_artifact(session, ctx.settings, job_id=job_id, name=LOG_NAME, kind="log")
        record_event(
            session,
            job_id,
            "finished",
            {
                "status": outcome.status.value,
                "error_code": outcome.error_code,
                "message": outcome.message,
            },
            attempt=attempt,
        )


def run_job(ctx: WorkerContext, job_id: str, *, target: Target = train_in_child) -> str | None:
    """Runs one job if it is still ours to run; returns its final status (None: skipped)."""
    if shutdown_requested.is_set():  # Celery may deliver one more during a warm shutdown
        send_or_defer(
            ctx.broker, ctx.db, ctx.settings, job_id
        )  # this message is acked on return: leave a new one
        return None
    if not wait_while_paused(ctx, job_id):
        log.info("job %s is no longer queued; nothing to do", job_id)
        return None
    claimed_at = time.monotonic()
    attempt = claim(ctx, job_id)
    if attempt is None:
        log.info("job %s was claimed elsewhere or cancelled; nothing to do", job_id)
        return None
    log.info("job %s attempt %s started", job_id, attempt)
    supervisor = Supervisor(ctx.db, ctx.settings, job_id, attempt, claimed_at)
    try:
        launch = trainer_launch(ctx, job_id)
    except (ValueError, KeyError) as exc:  # a stored config or plan this version can't read
        log.exception("job %s: its stored config or plan can't be read", job_id)
        message = f"the stored job can't be read by this lorabox version: {exc}"
        outcome = Outcome(JobStatus.FAILED, "invalid_job", message)
    else:
        outcome = supervisor.run(launch, target)
    finish(ctx, job_id, attempt, outcome, supervisor.renewed_at)
    log.info(
        "job %s attempt %s ended: %s %s",
        job_id, attempt, outcome.status or outcome.release or "fenced", outcome.error_code or "",
    )  # fmt: skip
    return outcome.status.value if outcome.status else None
