"""One job, start to finish: wait out a pause, claim, supervise the trainer, record the end.

The database decides whether a job runs: the claim is a conditional UPDATE (queued ->
running, attempt + 1), so a redelivered or duplicate message for a job that is running or
finished does nothing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from api.db import Database, Job
from api.db.models import JobStatus, utcnow
from api.jobs.artifacts import register_artifact
from api.jobs.events import record_event
from api.jobs.queue import is_paused
from api.settings import Settings, get_settings
from worker.child import STOP_ABORT, STOP_FINISH, STOP_NONE, train_in_child
from worker.relay import EventRelay, Fenced, fenced_update

log = logging.getLogger(__name__)
Target = Callable[..., None]
LOG_NAME = "train.log"


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db: Database
    worker_id: str

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> WorkerContext:
        settings = settings or get_settings()
        settings.ensure_dirs()
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "any")
        worker_id = f"{socket.gethostname()}:{os.getpid()}:gpu{gpu}"
        return cls(settings, Database(settings.database_url, pool_size=2), worker_id)


@dataclass(frozen=True)
class Outcome:
    status: JobStatus | None  # None: fenced, someone else owns the job now
    error_code: str | None = None
    message: str | None = None


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
        return attempt


def job_spec(ctx: WorkerContext, job_id: str) -> dict[str, Any]:
    """Everything the child needs, as plain strings (it pickles across `spawn`)."""
    s = ctx.settings
    with ctx.db.reading() as session:
        job = session.get(Job, job_id)
        assert job is not None
        resolved = dict(job.resolved)
        out = s.jobs_dir / job.id

        def model(key: str) -> str | None:
            return str(s.models_dir / resolved[key]) if resolved.get(key) else None

        return {
            "job_id": job.id,
            "config": job.config,
            "base_model": model("base_model"),
            "base_config": model("base_config"),
            "vae": model("vae"),
            "network_weights": (
                str(s.jobs_dir / resolved["network_weights"])
                if resolved.get("network_weights")
                else None
            ),
            "data_dir": str(s.datasets_dir / job.dataset_id),
            "reg_data_dir": str(s.datasets_dir / job.reg_dataset_id)
            if job.reg_dataset_id
            else None,
            "output_dir": str(out),
            "log_path": str(out / LOG_NAME),
        }


class Supervisor:
    """Runs the child, relays its events, and passes cancel/stop flags to it."""

    def __init__(self, ctx: WorkerContext, job_id: str, attempt: int) -> None:
        self.ctx, self.job_id, self.attempt = ctx, job_id, attempt
        self.relay = EventRelay(ctx.db, ctx.settings, job_id, attempt)
        self._next_poll = 0.0
        self._next_beat = time.monotonic() + ctx.settings.heartbeat_interval_s

    def run(self, spec: dict[str, Any], target: Target) -> Outcome:
        mp = multiprocessing.get_context("spawn")  # fresh interpreter: no inherited CUDA state
        events = mp.Queue()
        stop_flag = mp.Value("i", STOP_NONE)
        child = mp.Process(
            target=target, args=(spec, events, stop_flag), name=f"trainer-{self.job_id}"
        )
        child.start()
        outcome: Outcome | None = None
        try:
            while outcome is None:
                try:
                    message = events.get(timeout=0.1)
                except queue.Empty:
                    message = None
                    if not child.is_alive():
                        message = _drain_last(events)
                        if message is None:
                            break
                if message is not None:
                    outcome = self._on_message(message)
                self._tick(stop_flag)
            self.relay.flush()
        except Fenced:
            log.warning(
                "job %s attempt %s was taken over; stopping its trainer", self.job_id, self.attempt
            )
            stop_flag.value = STOP_ABORT
            outcome = Outcome(None)
        finally:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
                child.join()
        if outcome is None:
            outcome = Outcome(
                JobStatus.FAILED,
                "worker_lost",
                f"the trainer process died (exit code {child.exitcode})",
            )
        return outcome

    def _on_message(self, message: tuple[str, Any]) -> Outcome | None:
        kind, payload = message
        if kind == "event":
            self.relay.handle(payload)
            return None
        if kind == "result":
            return Outcome(JobStatus.SUCCEEDED)
        if kind == "cancelled":
            return Outcome(JobStatus.CANCELLED)
        code, text = payload
        return Outcome(JobStatus.FAILED, code, text)

    def _tick(self, stop_flag: Any) -> None:
        self.relay.maybe_flush()
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.ctx.settings.flag_poll_interval_s
            stop_flag.value = self._requested_stop()
        if now >= self._next_beat:
            self._next_beat = now + self.ctx.settings.heartbeat_interval_s
            with self.ctx.db.writing() as session:
                fenced_update(session, self.job_id, self.attempt, heartbeat_at=utcnow())

    def _requested_stop(self) -> int:
        with self.ctx.db.reading() as session:
            row = session.execute(
                sa.select(Job.cancel_requested, Job.stop_requested).where(Job.id == self.job_id)
            ).one()
        if row.cancel_requested:
            return STOP_ABORT
        return STOP_FINISH if row.stop_requested else STOP_NONE


def _drain_last(events: Any) -> tuple[str, Any] | None:
    """After the child exits, its last messages may still be in the pipe."""
    try:
        message: tuple[str, Any] = events.get(timeout=1.0)
    except queue.Empty:
        return None
    return message


def finish(ctx: WorkerContext, job_id: str, attempt: int, outcome: Outcome) -> None:
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
    if not wait_while_paused(ctx, job_id):
        log.info("job %s is no longer queued; nothing to do", job_id)
        return None
    attempt = claim(ctx, job_id)
    if attempt is None:
        log.info("job %s was claimed elsewhere or cancelled; nothing to do", job_id)
        return None
    log.info("job %s attempt %s started", job_id, attempt)
    outcome = Supervisor(ctx, job_id, attempt).run(job_spec(ctx, job_id), target)
    finish(ctx, job_id, attempt, outcome)
    log.info("job %s finished: %s %s", job_id, outcome.status, outcome.error_code or "")
    return outcome.status.value if outcome.status else None
