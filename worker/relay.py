"""Trainer events -> the job row, the event log and the metrics table.

Phases, artifacts and notices are written at once; step progress and its metrics are
batched into at most one write per ``progress_interval_s``. Every write is fenced by the
attempt number, so a worker that lost its lease can't overwrite a newer run.

The relay also keeps the run's clock (:class:`RunClock`): its measured seconds per step,
written to the job as ``measured_s_per_step``, and the time spent loading, caching,
sampling and saving, which the worker learns its allowances from.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import defaultdict, deque
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
from core.jobs.forecast import blended_s_per_step
from core.settings import Settings
from core.workers.model import CACHING, LOADING, SAMPLING, SAVING, RunTimings
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


class RunClock:
    """Where one run's time goes, from the trainer's events as they arrive.

    Seconds per step: the median of the steps' own ``s_per_step`` (the loop times a step
    without the saving and sampling after it, trainer/loop.py: train_epoch) over the last
    ``STEP_WINDOW`` steps, leaving out the first, which pays for kernel selection and the
    allocator's growth (used alone only when it is the only step). Phases: each lasts from its
    ``PhaseChanged`` to the next; loading starts at the claim; the last ends at the run's last
    event (the final save's artifact)."""

    STEP_WINDOW = 2000

    def __init__(self, started: float) -> None:
        self._phase, self._since, self._last = LOADING, started, started
        self._seconds: dict[str, float] = defaultdict(float)
        self._saves = self._samples = 0
        self._first_step: float | None = None
        self._steps: deque[float] = deque(maxlen=self.STEP_WINDOW)

    def seen(self, now: float | None = None) -> None:
        self._last = time.monotonic() if now is None else now

    def phase(self, phase: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._seconds[self._phase] += now - self._since
        self._phase, self._since, self._last = phase, now, now
        if phase == SAVING:  # one per save point (an epoch's, a step's, the final one)
            self._saves += 1

    def step(self, seconds: float) -> None:
        if self._first_step is None:
            self._first_step = seconds
        else:
            self._steps.append(seconds)

    def sample(self) -> None:
        self._samples += 1

    def s_per_step(self) -> float | None:
        if self._steps:
            return float(statistics.median(self._steps))
        return self._first_step

    def cached(self) -> bool:
        return self._total(CACHING) > 0

    def _total(self, phase: str) -> float:
        open_part = self._last - self._since if phase == self._phase else 0.0
        return self._seconds.get(phase, 0.0) + max(open_part, 0.0)

    def timings(self, *, cached_images: int) -> RunTimings:
        loaded = self._phase != LOADING  # loading ended: a later phase began
        counts = {
            LOADING: int(loaded),
            CACHING: cached_images if self.cached() else 0,
            SAMPLING: self._samples,
            SAVING: self._saves,
        }
        seconds = {name: self._total(name) for name in counts}
        return RunTimings(self.s_per_step(), seconds, counts)


class EventRelay(EventHandler):
    def __init__(self, db: Database, settings: Settings, job_id: str, attempt: int) -> None:
        self.db, self.settings, self.job_id, self.attempt = db, settings, job_id, attempt
        self.progress: dict[str, Any] = {"phase": "loading"}
        self._metrics: list[JobMetric] = []
        self._dirty = False
        self._last_flush = 0.0
        self._started = time.monotonic()
        self.clock = RunClock(self._started)
        # The time model's s/step for this job on this worker: the ETA's prior, set by the
        # runner once the job is claimed (None: no estimate; the ETA is the measured rate).
        self.model_s_per_step: float | None = None
        self._first_step: int | None = None

    def dispatch(self, event: Event) -> None:
        self.clock.seen()
        super().dispatch(event)

    __call__ = dispatch

    def on_phase_changed(self, event: PhaseChanged) -> None:
        self.clock.phase(event.phase)
        self.progress["phase"] = event.phase
        self._write_now(event, "phase")

    def on_training_started(self, event: TrainingStarted) -> None:
        self.clock.phase("training")
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
        self.clock.step(event.s_per_step)
        if self._first_step is None:  # a resumed attempt starts past step 0
            self._first_step = event.step - 1
        s_per_step = blended_s_per_step(
            self.model_s_per_step,
            self.clock.s_per_step() or event.s_per_step,
            event.step - self._first_step,
        )
        self.progress.update(
            {k: v for k, v in dataclasses.asdict(event).items()},
            phase="training",
            elapsed_s=round(elapsed, 3),
            eta_s=round(s_per_step * max(event.total_steps - event.step, 0), 3),
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
        if event.kind == "sample":
            self.clock.sample()
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
        fenced_update(
            session, self.job_id, self.attempt, progress=dict(self.progress),
            measured_s_per_step=self.clock.s_per_step(),
        )  # fmt: skip
        session.add_all(self._metrics)
        record_event(session, self.job_id, "progress", dict(self.progress), attempt=self.attempt)
        self._metrics = []
        self._dirty = False
        self._last_flush = time.monotonic()
