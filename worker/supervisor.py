"""The trainer's supervisor: runs the child, relays its events, holds the job's lease.

It passes cancel/stop flags to the trainer, renews the heartbeat, and stops the trainer
within a step when the worker shuts down (the trainer saves its training state and the job
goes back to the queue, to resume from that state exactly), when a newer
attempt owns the job (fenced), or when it could not renew its lease for most of the lease
timeout (the database is unreachable: a reconciler may hand the job to another worker soon,
so this one must stop first; its files stay).

A preemption (``preempt_requested``, set by the reconciler: core/jobs/preemption.py) is the
same suspend for another user's job: the attempt counts it (``preempted``) and hands the job
back, to resume exactly when the policy ranks it first again.

A cancel is polled by the trainer between steps and setup phases; one stuck in a call that
can't poll (reading a multi-GB base model) is killed once ``cancel_grace_s`` passed since the
cancel was seen, and the job still ends ``cancelled``. When a run ends, the temporary files its
trainer left half-written (killed inside ``atomic_path``) are removed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from core.db import Database, Job
from core.db.tables import JobStatus, utcnow
from core.jobs.preemption import requested_for
from core.settings import Settings
from trainer.hooks import Event
from trainer.storage import remove_temporaries
from worker.child import STOP_ABORT, STOP_FINISH, STOP_NONE, STOP_SUSPEND, TrainerLaunch
from worker.relay import EventRelay, Fenced, fenced_update
from worker.trainer_process import trainer_context

log = logging.getLogger(__name__)
Target = Callable[..., None]

# Set by the worker's SIGTERM/SIGINT handler (worker.lifecycle): the running job stops within a
# step and goes back to the queue.
shutdown_requested = threading.Event()


class LeaseLost(Fenced):
    """The heartbeat could not be renewed for most of the lease: stop before someone else runs."""


# Runs that end early on purpose and go back to the queue: not counted as lost attempts.
HANDED_BACK = ("shutdown", "preempted")


@dataclass(frozen=True)
class Outcome:
    status: JobStatus | None  # None: fenced (someone else owns the job now) or released
    error_code: str | None = None
    message: str | None = None
    # Why the run goes back to the queue: "trainer_died", "shutdown", "preempted".
    release: str | None = None
    step: int | None = None  # the step a suspended trainer saved its state at

    @property
    def lost(self) -> bool:
        """A release that counts against LORABOX_MAX_ATTEMPTS (the run died)."""
        return self.release not in HANDED_BACK


_DEAD = ("dead", None)


class Supervisor:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        job_id: str,
        attempt: int,
        claimed_at: float | None = None,
    ) -> None:
        self.db, self.settings, self.job_id, self.attempt = db, settings, job_id, attempt
        self.relay = EventRelay(db, settings, job_id, attempt)
        self._pending: deque[Event] = deque()  # events the database could not take yet
        self._next_poll = 0.0
        self._next_beat = time.monotonic() + settings.heartbeat_interval_s
        # The lease began when the claim was sent (its heartbeat_at is from before it), not
        # when this object was built: a slow claim must not stretch the grace.
        self._renewed = claimed_at if claimed_at is not None else time.monotonic()
        # Stop before the lease can expire elsewhere: a reconciler acts at lease_timeout_s.
        self._grace_s = settings.lease_timeout_s * 0.75
        self._shutting_down = False
        self._preempting = False  # the reconciler asked this attempt to make room
        self._cancel_seen: float | None = None  # when the trainer was first told to abort
        self._killed = False  # ... and was killed for not stopping within cancel_grace_s
        # Set by the lease watchdog when the grace ran out: the trainer is killed and this
        # attempt writes nothing more, whatever a database call in flight is doing.
        self._fenced = threading.Event()
        self._last_warning = 0.0

    def run(self, launch: TrainerLaunch, target: Target) -> Outcome:
        mp = trainer_context(self.settings.trainer_start_method)
        events = mp.Queue()
        stop_flag = mp.Value("i", STOP_NONE)
        lifeline, held = mp.Pipe(duplex=False)  # the trainer reads EOF once this process is gone
        child = mp.Process(
            target=target,
            args=(launch, events, stop_flag, lifeline),
            name=f"trainer-{self.job_id}",
        )
        try:
            child.start()
        except (OSError, EOFError) as exc:  # the fork server died: the job goes back
            log.error("job %s: the trainer process could not start: %s", self.job_id, exc)
            held.close()
            detail = f"the trainer process could not start ({type(exc).__name__}: {exc})"
            return Outcome(None, "worker_lost", detail, release="trainer_died")
        finally:
            lifeline.close()
        watching = threading.Event()
        watchdog = threading.Thread(
            target=self._fence_by_clock, args=(child, watching), name="lease-watchdog", daemon=True
        )
        watchdog.start()
        try:
            outcome = self._supervise(child, events, stop_flag)
        except Fenced as exc:
            log.warning(
                "job %s attempt %s: %s; stopping its trainer",
                self.job_id, self.attempt,
                "lease not renewed" if isinstance(exc, LeaseLost) else "taken over",
            )  # fmt: skip
            stop_flag.value = STOP_ABORT
            outcome = Outcome(None)
        finally:
            watching.set()
            watchdog.join()
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
                child.join()
            held.close()
            _remove_partial_files(launch, child.pid)
        if self._fenced.is_set():  # fenced as the run ended: its end is not ours to record
            return Outcome(None)
        if outcome is None:
            detail = f"the trainer process died (exit code {child.exitcode})"
            outcome = Outcome(None, "worker_lost", detail, release="trainer_died")
        return outcome

    def _fence_by_clock(self, child: Any, done: threading.Event) -> None:
        """The lease's deadline, checked on its own thread: a database call that hangs (a
        partition, a failing-over server) blocks the supervisor's loop, never this check."""
        while not done.wait(0.1):
            if time.monotonic() - self._renewed < self._grace_s:
                continue
            self._fenced.set()
            log.warning(
                "job %s attempt %s: lease not renewed for %.1f s; killing its trainer",
                self.job_id, self.attempt, time.monotonic() - self._renewed,
            )  # fmt: skip
            child.kill()  # a step or a save in progress must not finish: someone else may run
            return

    @property
    def renewed_at(self) -> float:
        """When the lease was last renewed (``time.monotonic``)."""
        return self._renewed

    def _check_fence(self) -> None:
        if self._fenced.is_set():
            raise LeaseLost(self.job_id)

    def _supervise(self, child: Any, events: Any, stop_flag: Any) -> Outcome | None:
        outcome: Outcome | None = None
        while outcome is None:
            self._check_fence()
            message = _next_message(events, child)
            if message is _DEAD:
                break
            if message is not None:
                outcome = self._on_message(message)
            self._tick(stop_flag)
            self._kill_if_cancel_ignored(child)
        if outcome is None and self._killed:
            grace = self.settings.cancel_grace_s
            detail = f"the trainer had not stopped {grace:g} s after the cancel and was killed"
            outcome = Outcome(JobStatus.CANCELLED, message=detail)
        self._flush_within_lease()
        if self._shutting_down and (outcome is None or outcome.status == JobStatus.CANCELLED):
            return Outcome(None, release="shutdown")
        return outcome

    def _on_message(self, message: tuple[str, Any]) -> Outcome | None:
        kind, payload = message
        if kind == "event":
            self._pending.append(payload)
            self._write_pending()
            return None
        if kind == "result":
            return Outcome(JobStatus.SUCCEEDED)
        if kind == "cancelled":
            return Outcome(JobStatus.CANCELLED)
        if kind == "suspended":
            return self._suspended(payload)
        code, text = payload
        return Outcome(JobStatus.FAILED, code, text)

    def _suspended(self, payload: dict[str, Any]) -> Outcome:
        """The trainer saved its state and ended: a shutdown's hand-back, or a preemption's
        (counted on the row in the hand-back's transaction: worker/runner.py: _record_end;
        docs/scheduling.md, "Preemption")."""
        if not self._preempting or self._shutting_down:
            return Outcome(None, release="shutdown")
        self._flush_within_lease()  # the state's artifact event first: the resume reads it
        return Outcome(None, release="preempted", step=payload.get("step"))

    def _write_pending(self) -> None:
        """In order; an event stays pending while the database is unreachable."""
        while self._pending:
            self._check_fence()
            try:
                self.relay(self._pending[0])
            except OperationalError as exc:
                self._unreachable(exc)
                return
            self._pending.popleft()

    def _tick(self, stop_flag: Any) -> None:
        if shutdown_requested.is_set() and not self._shutting_down:
            log.info("job %s: the worker is shutting down; handing the job back", self.job_id)
            self._shutting_down = True
        try:
            self._check_fence()
            self._write_pending()
            self.relay.maybe_flush()
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + self.settings.flag_poll_interval_s
                stop_flag.value = self._requested_stop()
                if stop_flag.value == STOP_ABORT and self._cancel_seen is None:
                    self._cancel_seen = now
            if now >= self._next_beat:
                self._next_beat = now + self.settings.heartbeat_interval_s
                self._check_fence()
                with self.db.writing() as session:
                    fenced_update(session, self.job_id, self.attempt, heartbeat_at=utcnow())
                if not self._fenced.is_set():  # a renewal that answered after the fence is late
                    self._renewed = now
        except OperationalError as exc:
            self._unreachable(exc)
        if self._shutting_down and stop_flag.value != STOP_ABORT:
            stop_flag.value = STOP_SUSPEND

    def _kill_if_cancel_ignored(self, child: Any) -> None:
        """The trainer polls between steps and setup phases, but not inside one long call."""
        if self._cancel_seen is None or self._killed or not child.is_alive():
            return
        if time.monotonic() - self._cancel_seen < self.settings.cancel_grace_s:
            return
        log.warning(
            "job %s: the trainer ignored the cancel for %.0f s; killing it",
            self.job_id, self.settings.cancel_grace_s,
        )  # fmt: skip
        child.kill()
        self._killed = True

    def _unreachable(self, exc: OperationalError) -> None:
        """Train on while the lease holds; past its grace, fence ourselves."""
        now = time.monotonic()
        down_s = now - self._renewed
        if now - self._last_warning >= 1.0:  # a tick runs every 0.1 s
            self._last_warning = now
            log.warning("job %s: database unreachable for %.1f s: %s", self.job_id, down_s, exc)
        if down_s >= self._grace_s:
            raise LeaseLost(self.job_id) from exc

    def _flush_within_lease(self) -> None:
        while True:
            self._check_fence()
            try:
                self._write_pending()
                if not self._pending:
                    self.relay.flush()
                    return
            except OperationalError as exc:
                self._unreachable(exc)
            if time.monotonic() - self._renewed >= self._grace_s:
                raise LeaseLost(self.job_id)
            time.sleep(min(1.0, self.settings.heartbeat_interval_s))

    def _requested_stop(self) -> int:
        with self.db.reading() as session:
            row = session.execute(
                sa.select(Job.cancel_requested, Job.stop_requested, Job.preempt_requested).where(
                    Job.id == self.job_id
                )
            ).one()
            if row.preempt_requested and not self._preempting:
                self._preempting = requested_for(session, self.job_id, self.attempt)
        if row.cancel_requested:
            return STOP_ABORT
        if self._shutting_down or self._preempting:
            return STOP_SUSPEND
        return STOP_FINISH if row.stop_requested else STOP_NONE


def _remove_partial_files(launch: TrainerLaunch, pid: int | None) -> None:
    """A trainer killed while writing leaves its temporary file: in the job's folder, or beside
    the images (a disk latent cache). Only this process's (the pid is in the name): a newer
    attempt of the job may be writing in the same folder."""
    if pid is None:
        return
    job = launch.job
    for folder in (job.output_dir, job.data_dir, job.reg_data_dir):
        if folder is None:
            continue
        try:
            for path in remove_temporaries(folder, pid):
                log.warning("job %s: removed the partial file %s", launch.job_id, path)
        except OSError:  # never worth losing the run's outcome over
            log.warning("job %s: could not sweep %s", launch.job_id, folder, exc_info=True)


def _next_message(events: Any, child: Any) -> tuple[str, Any] | None:
    """The child's next message; None on a quiet tick; _DEAD once it exited and is drained."""
    try:
        message: tuple[str, Any] = events.get(timeout=0.1)
        return message
    except queue.Empty:
        if child.is_alive():
            return None
    try:  # after the child exits, its last messages may still be in the pipe
        message = events.get(timeout=1.0)
        return message
    except queue.Empty:
        return _DEAD
