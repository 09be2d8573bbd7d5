"""One job, start to finish: wait out a pause, claim, supervise the trainer, record the end.

The database decides whether a job runs: the claim is a conditional UPDATE (queued ->
running, attempt + 1), so a redelivered or duplicate message for a job that is running or
finished does nothing. Before it claims, the worker checks the job's estimated device memory
against what is free on its device now; a job that doesn't fit waits, and the worker takes
the next queued job that does (``core/workers/placement.py``). A run that succeeded teaches
the worker its speed (``core/workers/registry.py: learn_from_run``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from core.db import Artifact, Database, Dataset, Job
from core.db.tables import JobStatus, utcnow
from core.jobs.artifacts import LOG_NAME, forget_lost_artifacts, register_artifact
from core.jobs.broker import Broker, send_or_defer
from core.jobs.events import record_event
from core.jobs.forecast import refresh_after_change
from core.jobs.queue import is_paused
from core.jobs.recovery import release
from core.settings import Settings, get_settings
from core.workers import placement, seconds_per_step
from core.workers.registry import BUSY, IDLE, all_workers, learn_from_run, set_activity
from trainer.config import stored_config
from trainer.job import TrainingJob
from trainer.plan import TrainingPlan
from worker.child import TrainerLaunch, train_in_child
from worker.device import Device
from worker.relay import Fenced, RunClock, fenced_update
from worker.supervisor import Outcome, Supervisor, Target, shutdown_requested

log = logging.getLogger(__name__)


@dataclass
class Activity:
    """The job this worker runs now (None: idle), read by its heartbeat thread."""

    job_id: str | None = None


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db: Database
    worker_id: str
    broker: Broker
    device: Device = field(default_factory=Device)
    activity: Activity = field(default_factory=Activity)

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, device: Device | None = None
    ) -> WorkerContext:
        settings = settings or get_settings()
        settings.ensure_dirs()
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "any")
        worker_id = f"{socket.gethostname()}:{os.getpid()}:gpu{gpu}"
        db = Database.for_settings(settings, pool_size=2)
        return cls(settings, db, worker_id, Broker(settings), device or Device())


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
                blocked_reason=None,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        set_activity(session, ctx.device.key, state=BUSY, current_job_id=job_id)
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
            config=stored_config(job.config),
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


def claim_fitting(ctx: WorkerContext, job_id: str) -> tuple[str, int] | None:
    """Claims ``job_id`` if its estimate fits the device's free memory now; else leaves it
    waiting (``gpu_memory``) and claims the first queued job that fits. Returns the job
    claimed and its attempt, or None (nothing fit, or the job was no longer queued)."""
    free = ctx.device.free_memory_bytes()
    with ctx.db.reading() as session:
        estimate = session.scalar(sa.select(Job.estimate).where(Job.id == job_id))
    if placement.fits(estimate, free):
        attempt = claim(ctx, job_id)
        return (job_id, attempt) if attempt is not None else None
    assert free is not None  # fits() holds nothing back when the free memory is unknown
    with ctx.db.writing() as session:
        blocked = placement.block(
            session, ctx.settings, job_id=job_id, free_bytes=free, worker=ctx.device.name
        )
    if not blocked:  # no longer queued (cancelled, or claimed by another worker)
        return None
    need = (placement.needed_bytes(estimate) or 0) / 2**30
    log.info("job %s needs %.2f GiB, %.2f GiB free: it waits", job_id, need, free / 2**30)
    tried = {job_id}
    while True:  # each candidate is claimed by the same conditional UPDATE; one may be taken
        with ctx.db.reading() as session:
            other = next(placement.fitting_queued(session, free, skip=tried), None)
        if other is None:
            return None
        attempt = claim(ctx, other)
        if attempt is not None:
            log.info("job %s claimed ahead of %s (fits the free memory)", other, job_id)
            return other, attempt
        tried.add(other)


def run_job(ctx: WorkerContext, job_id: str, *, target: Target = train_in_child) -> str | None:
    """Runs one job if it is still ours to run (or, when it doesn't fit the device's free
    memory, the next one that does); returns its final status (None: skipped)."""
    if shutdown_requested.is_set():  # Celery may deliver one more during a warm shutdown
        send_or_defer(
            ctx.broker, ctx.db, ctx.settings, job_id
        )  # this message is acked on return: leave a new one
        return None
    if not wait_while_paused(ctx, job_id):
        log.info("job %s is no longer queued; nothing to do", job_id)
        return None
    claimed_at = time.monotonic()
    claimed = claim_fitting(ctx, job_id)
    if claimed is None:
        log.info("job %s was claimed elsewhere, cancelled or waits for memory", job_id)
        return None
    job_id, attempt = claimed
    ctx.activity.job_id = job_id
    refresh_after_change(ctx.db, ctx.settings)  # this worker is busy now: the queue moves
    try:
        return _supervise(ctx, job_id, attempt, claimed_at, target)
    finally:
        ctx.activity.job_id = None
        _mark_idle(ctx)
        refresh_after_change(ctx.db, ctx.settings)


def model_s_per_step(ctx: WorkerContext, job_id: str) -> float | None:
    """The time model's s/step for this job on this worker (its learned efficiency): the
    prior of the job's ETA (core/jobs/forecast.py: blended_s_per_step)."""
    with ctx.db.reading() as session:
        estimate = session.scalar(sa.select(Job.estimate).where(Job.id == job_id))
        worker = next((w for w in all_workers(session) if w.key == ctx.device.key), None)
    if not estimate or "step_flops" not in estimate or worker is None or worker.peak_flops <= 0:
        return None
    return seconds_per_step(int(estimate["step_flops"]), worker)


def _supervise(
    ctx: WorkerContext, job_id: str, attempt: int, claimed_at: float, target: Target
) -> str | None:
    log.info("job %s attempt %s started", job_id, attempt)
    supervisor = Supervisor(ctx.db, ctx.settings, job_id, attempt, claimed_at)
    supervisor.relay.model_s_per_step = model_s_per_step(ctx, job_id)
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
    if outcome.status == JobStatus.SUCCEEDED:
        learn(ctx, job_id, supervisor.relay.clock)
    return outcome.status.value if outcome.status else None


def _mark_idle(ctx: WorkerContext) -> None:
    try:
        with ctx.db.writing() as session:
            set_activity(session, ctx.device.key, state=IDLE, current_job_id=None)
    except OperationalError:  # the next heartbeat says it
        log.warning("could not mark worker %s idle", ctx.device.name)


def learn(ctx: WorkerContext, job_id: str, clock: RunClock) -> None:
    """The worker's efficiency and allowances move toward what this run measured; a failure
    here never touches the job, whose end is already recorded."""
    try:
        with ctx.db.writing() as session:
            job = session.get(Job, job_id)
            if job is None:
                return
            estimate = job.estimate or {}
            step_flops = estimate.get("step_flops")
            images = _dataset_images(session, job) if clock.cached() else 0
            timings = clock.timings(cached_images=images)
            info = learn_from_run(
                session, ctx.device.key,
                step_flops=int(step_flops) if isinstance(step_flops, int | float) else None,
                timings=timings,
            )  # fmt: skip
        if info is not None:
            log.info(
                "worker %s learned from job %s: %.4f s/step measured, efficiency %.3f",
                info.name, job_id, timings.s_per_step or 0.0, info.efficiency,
            )  # fmt: skip
    except Exception:  # noqa: BLE001 - learning is a bonus, never a failure
        log.exception("job %s: could not learn from its timings", job_id)


def _dataset_images(session: Any, job: Job) -> int:
    """Images whose latents (or text-encoder outputs) a run caches: its datasets' images."""
    ids = [i for i in (job.dataset_id, job.reg_dataset_id) if i]
    counts = session.scalars(sa.select(Dataset.image_count).where(Dataset.id.in_(ids)))
    return int(sum(counts))
