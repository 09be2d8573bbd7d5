"""Jobs, start to finish: wait out a pause, claim, supervise the trainer, record the end.

A message only wakes the worker: the database picks the job (``core/jobs/claim.py``), the
first eligible one in policy order that fits the device's free memory now, by a conditional
UPDATE (queued -> running, attempt + 1), so a duplicated or redelivered message starts
nothing twice, and one that finds nothing to do is simply acked. A worker that ends a job
claims the next at once, until nothing eligible is left. One job at a time per worker
process (``WorkerContext.slot``): the Celery task and the reconciler's local wake
(:func:`wake_locally`, for messages that never came) take turns. A run that succeeded
teaches the worker its speed (``core/workers/registry.py: learn_from_run``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
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
from core.jobs.claim import ClaimingWorker, claim_next, take
from core.jobs.events import record_event
from core.jobs.forecast import refresh_after_change
from core.jobs.preemption import record_preemption
from core.jobs.queue import is_paused
from core.jobs.recovery import release
from core.jobs.schedule import first_fitting
from core.jobs.usage import close_usage
from core.settings import Settings, get_settings
from core.workers import seconds_per_step
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
    # Held while this process claims or runs a job: the GPU runs one job at a time.
    slot: threading.Lock = field(default_factory=threading.Lock)
    local_runs: list[threading.Thread] = field(default_factory=list)
    # Set once the trainer server is warm and the heartbeat runs (worker/lifecycle.py): the
    # reconciler's local wake-ups wait for it, as Celery only delivers after it.
    ready: threading.Event = field(default_factory=threading.Event)

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


def wait_while_paused(ctx: WorkerContext) -> bool:
    """Holds the wake-up (and so this worker's turn) while the queue is paused; False when
    the worker is shutting down meanwhile."""
    while True:
        with ctx.db.reading() as session:
            paused = is_paused(session)
        if not paused:
            return True
        if shutdown_requested.is_set():
            return False
        time.sleep(ctx.settings.pause_poll_interval_s)


def _claimer(ctx: WorkerContext) -> ClaimingWorker:
    free = ctx.device.free_memory_bytes()
    return ClaimingWorker(ctx.worker_id, ctx.device.key, ctx.device.name, free)


def _started(session: Any, ctx: WorkerContext, job_id: str, attempt: int) -> None:
    """In the claim's transaction: the worker is busy, the job's log says who runs it."""
    set_activity(session, ctx.device.key, state=BUSY, current_job_id=job_id)
    data = {"worker_id": ctx.worker_id, "attempt": attempt}
    record_event(session, job_id, "started", data, attempt=attempt)
    if attempt > 1:  # an earlier attempt's orphaned trainer may have pruned files unrecorded
        for name in forget_lost_artifacts(session, ctx.settings, job_id):
            log.warning("job %s: %s was listed but its file is gone; unlisted", job_id, name)
            lost = {"path": name, "lost": True}
            record_event(session, job_id, "artifact_removed", lost, attempt=attempt)


def claim(ctx: WorkerContext, job_id: str) -> int | None:
    """``job_id`` queued -> running for this worker, whatever the policy says (tests set up
    attempts with it); the new attempt number, or None if it was not queued."""
    with ctx.db.writing() as session:
        attempt = take(session, job_id=job_id, worker=_claimer(ctx))
        if attempt is not None:
            _started(session, ctx, job_id, attempt)
        return attempt


def claim_fitting(ctx: WorkerContext) -> tuple[str, int] | None:
    """Claims the first eligible job, in policy order, whose estimate fits the device's free
    memory now (those ranked ahead that don't fit wait, ``gpu_memory``); returns the job and
    its attempt, or None when there is nothing to take."""
    with ctx.db.writing() as session:
        claimed = claim_next(session, ctx.settings, _claimer(ctx))
        if claimed is not None:
            _started(session, ctx, *claimed)
    return claimed


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
            if outcome.release == "preempted":  # counted with the hand-back, or not at all
                record_preemption(session, job_id=job_id, attempt=attempt, step=outcome.step)
            status = release(
                session, ctx.settings, job_id=job_id, attempt=attempt, reason=outcome.release,
                lost=outcome.lost, detail=outcome.message,
            )  # fmt: skip
        if status == JobStatus.QUEUED:
            send_or_defer(ctx.broker, job_id)
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
        close_usage(session, job_id=job_id, attempt=attempt)
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


def run_job(
    ctx: WorkerContext, job_id: str | None = None, *, target: Target = train_in_child
) -> str | None:
    """A wake-up: runs the job the policy ranks first that fits, then the next, until none
    is left; returns the last one's final status (None: nothing ran). ``job_id``, which
    messages of older versions carry, is ignored: they wake the worker like any other."""
    del job_id
    if not ctx.slot.acquire(blocking=False):  # this process runs a job already
        return None
    try:
        status = None
        while not shutdown_requested.is_set() and wait_while_paused(ctx):
            claimed_at = time.monotonic()
            claimed = claim_fitting(ctx)
            if claimed is None:
                log.info("wake-up: nothing eligible fits this worker; idle")
                return status
            job_id, attempt = claimed
            status = _run_claimed(ctx, job_id, attempt, claimed_at, target)
        return status
    finally:
        ctx.slot.release()


def _run_claimed(
    ctx: WorkerContext, job_id: str, attempt: int, claimed_at: float, target: Target
) -> str | None:
    ctx.activity.job_id = job_id
    refresh_after_change(ctx.db, ctx.settings)  # this worker is busy now: the queue moves
    try:
        return _supervise(ctx, job_id, attempt, claimed_at, target)
    finally:
        ctx.activity.job_id = None
        _mark_idle(ctx)
        refresh_after_change(ctx.db, ctx.settings)


def wake_locally(ctx: WorkerContext) -> float | None:
    """The reconciler's wake-up, which needs no broker: when this worker is idle and a job
    it can run is eligible, a thread of this process claims it (``run_job``), whatever
    happened to the messages.

    A job queued (or handed back) less than ``wake_grace_s`` ago is left to its message: the
    worker it wakes, not whichever idle worker's pass comes first, should take it. Returns
    the seconds until that grace ends (the reconciler tries again then, not a whole interval
    later: docs/reliability.md, "Reconciler"), else None."""
    if not ctx.ready.is_set() or ctx.slot.locked() or shutdown_requested.is_set():
        return None
    with ctx.db.reading() as session:
        job = first_fitting(session, ctx.settings, free_bytes=ctx.device.free_memory_bytes())
        if job is None:
            return None
        queued_since = sa.func.coalesce(Job.heartbeat_at, Job.created_at)
        since = session.scalar(sa.select(queued_since).where(Job.id == job.id))
    if since is None:
        return None
    left_s = ctx.settings.wake_grace_s - (utcnow() - since).total_seconds()
    if left_s > 0:
        return left_s
    ctx.local_runs[:] = [t for t in ctx.local_runs if t.is_alive()]
    run = threading.Thread(target=run_job, args=(ctx,), name="lorabox-local-wake", daemon=True)
    ctx.local_runs.append(run)
    run.start()
    log.info("woke this worker for job %s (no message came for it)", job.id)
    return None


def join_local_runs(ctx: WorkerContext, timeout_s: float) -> None:
    """At shutdown: a job a local wake runs hands itself back like a task's (the supervisor
    sees the shutdown flag) before the process ends."""
    for run in list(ctx.local_runs):
        run.join(timeout_s)


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
