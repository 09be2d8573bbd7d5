"""Trainer events -> the job row, the event log and the metrics table.

Phases, artifacts and notices are written at once; step progress and its metrics are
batched into at most one write per ``progress_interval_s``. Every write is fenced by the
attempt number, so a worker that lost its lease can't overwrite a newer run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.catalog.hashing import sha256_file
from core.db import Database, Job, JobMetric
from core.db.tables import JobStatus
from core.jobs.artifacts import job_file, register_artifact, unregister_artifact
from core.jobs.events import record_event
from core.settings import Settings
from trainer.hooks import (
    ArtifactRemoved,
    ArtifactSaved,
    EpochCompleted,
    Event,
    EventHandler,
    Notice,
    PhaseChanged,
    StepCompleted,
    TrainingStarted,
)


class Fenced(Exception):  # noqa: N818 - a control-flow signal
    """The job's attempt moved on (or it left `running`): this worker must stop writing."""


def fenced_update(session: Session, job_id: str, attempt: int, **values: Any) -> None:
    result = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Fenced(job_id)


class EventRelay(EventHandler):
    def __init__(self, db: Database, settings: Settings, job_id: str, attempt: int) -> None:
        self.db, self.settings, self.job_id, self.attempt = db, settings, job_id, attempt
        self.progress: dict[str, Any] = {"phase": "loading"}
        self._metrics: list[JobMetric] = []
        self._dirty = False
        self._last_flush = 0.0
        self._started = time.monotonic()

    def on_phase_changed(self, event: PhaseChanged) -> None:
        self.progress["phase"] = event.phase
        self._write_now(event, "phase")

    def on_training_started(self, event: TrainingStarted) -> None:
        self.progress.update(
            phase="training",
            step=event.start_step,
            total_steps=event.total_steps,
            total_epochs=event.total_epochs,
        )
        self._write_now(event, "training_started")

    def on_step_completed(self, event: StepCompleted) -> None:
        """Batched in memory: written by the next flush or with the next event written at once."""
        elapsed = time.monotonic() - self._started
        self.progress.update(
            {k: v for k, v in dataclasses.asdict(event).items()},
            phase="training",
            elapsed_s=round(elapsed, 3),
            eta_s=round(event.s_per_step * max(event.total_steps - event.step, 0), 3),
        )
        self._metrics.append(
            JobMetric(
                job_id=self.job_id,
                attempt=self.attempt,
                step=event.step,
                epoch=event.epoch,
                loss=event.loss,
                avg_loss=event.avg_loss,
                lr=event.lr,
            )
        )
        self._dirty = True

    def on_epoch_completed(self, event: EpochCompleted) -> None:
        self._write_now(event, "epoch")

    def on_artifact_saved(self, event: ArtifactSaved) -> None:
        path = job_file(self.settings, self.job_id, event.path)
        digest = sha256_file(path) if path is not None else None  # before taking the row lock
        with self._recording(event, "artifact") as session:
            register_artifact(
                session,
                self.settings,
                job_id=self.job_id,
                name=event.path,
                kind=event.kind,
                epoch=event.epoch,
                step=event.step,
                sha256=digest,
            )

    def on_artifact_removed(self, event: ArtifactRemoved) -> None:
        with self._recording(event, "artifact_removed") as session:
            unregister_artifact(session, job_id=self.job_id, name=event.path)

    def on_notice(self, event: Notice) -> None:
        self._write_now(event, "notice")

    def _write_now(self, event: Event, kind: str) -> None:
        with self._recording(event, kind):
            pass

    @contextmanager
    def _recording(self, event: Event, kind: str) -> Iterator[Session]:
        """One transaction: pending progress, this progress, the caller's writes, the event."""
        data = dataclasses.asdict(event)
        with self.db.writing() as session:
            self._flush_into(session)
            fenced_update(session, self.job_id, self.attempt, progress=dict(self.progress))
            yield session
            record_event(session, self.job_id, kind, data, attempt=self.attempt)

    def maybe_flush(self) -> None:
        if self._dirty and time.monotonic() - self._last_flush >= self.settings.progress_interval_s:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        with self.db.writing() as session:
            self._flush_into(session)

    def _flush_into(self, session: Session) -> None:
        if not self._dirty:
            return
        fenced_update(session, self.job_id, self.attempt, progress=dict(self.progress))
        session.add_all(self._metrics)
        record_event(session, self.job_id, "progress", dict(self.progress), attempt=self.attempt)
        self._metrics = []
        self._dirty = False
        self._last_flush = time.monotonic()
