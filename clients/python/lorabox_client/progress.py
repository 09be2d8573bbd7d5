"""A one-line live progress display of a job (``Job.wait(progress=True)``, ``lorabox
submit --wait``).

The ETA shown is the server's (``progress.eta_s``, else the forecast's
``estimated_finish_at``), never one computed here from a single step: the server blends
its estimate with the measured rate (``core/jobs/forecast.py``). Here it is only smoothed
for display, as a finish instant moving towards each new value by a time-weighted step,
so the countdown runs steadily between updates and one slow step moves it a little.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

WIDTH = 30
# Seconds over which a new ETA takes ~63% effect (an exponential moving average in time).
ETA_SMOOTHING_S = 20.0
# At most this fraction of the time left, per second, is added or taken by one new value: an
# outlier (one slow step: 00:22 -> 26:35 in issue 15) moves the display a little, a lasting
# change gets there in tens of seconds.
ETA_MAX_CHANGE_PER_S = 0.1
# How far a running job has got, by phase, so the display never goes back within a run.
PHASE_ORDER = {None: 0, "queued": 0, "loading": 1, "caching": 2, "training": 3, "saving": 3,
               "sampling": 3}  # fmt: skip
# What a running job is doing before its first step, in words.
SETUP_PHASES = {
    None: "starting",
    "queued": "starting",
    "loading": "loading the base model",
    "caching": "caching latents and captions",
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _seconds_until(stamp: str | None) -> float | None:
    if not stamp:
        return None
    at = datetime.fromisoformat(stamp)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return max((at - datetime.now(UTC)).total_seconds(), 0.0)


def _waiting(job: dict[str, Any]) -> str:
    """Why it waits, else when the forecast starts it."""
    if job.get("blocked_reason"):
        return f", waiting: {job['blocked_reason'].replace('_', ' ')}"
    wait = _seconds_until(job.get("estimated_start_at"))
    if wait is None:
        return ""
    return f", starts in ~{_duration(wait)}"


def server_eta_s(job: dict[str, Any]) -> float | None:
    """The one ETA the server computes: the running job's ``progress.eta_s``, else the
    forecast's end."""
    eta = (job.get("progress") or {}).get("eta_s")
    if isinstance(eta, (int, float)):
        return float(eta)
    return _seconds_until(job.get("estimated_finish_at"))


class EtaSmoother:
    """The displayed ETA: the server's, as a finish instant smoothed over time."""

    def __init__(
        self, tau_s: float = ETA_SMOOTHING_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tau_s, self.clock = tau_s, clock
        self._finish: float | None = None
        self._last = 0.0

    def reset(self) -> None:
        self._finish = None

    def update(self, eta_s: float | None) -> float | None:
        """Seconds to show, after taking ``eta_s`` (None: no new value) into account."""
        now = self.clock()
        if eta_s is not None:
            target = now + eta_s
            if self._finish is None:
                self._finish = target
            else:
                # Weighted by the time since the last value: updates that arrive in a burst
                # (a stream replaying its history) barely move it, a value held for a
                # while wins.
                elapsed = max(now - self._last, 0.0)
                change = (1 - math.exp(-elapsed / self.tau_s)) * (target - self._finish)
                limit = ETA_MAX_CHANGE_PER_S * elapsed * max(self._finish - now, 1.0)
                self._finish += min(max(change, -limit), limit)
            self._last = now
        if self._finish is None:
            return None
        return max(self._finish - now, 0.0)


def _setup_line(job: dict[str, Any], phase: str | None, eta: float | None) -> str:
    """A running job before its first step: what it does, for how long so far."""
    doing = SETUP_PHASES.get(phase, phase or "starting")
    since = None
    started = job.get("started_at")
    if started:
        at = datetime.fromisoformat(started)
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        since = max((datetime.now(UTC) - at).total_seconds(), 0.0)
    elapsed = f" ({_duration(since)})" if since is not None else ""
    finish = f", done in ~{_duration(eta)}" if eta is not None else ""
    return f"running: {doing}{elapsed}{finish}"


def progress_line(job: dict[str, Any], eta: float | None = None) -> str:
    """The job in one line; ``eta`` the seconds to show (default: the server's, as is)."""
    progress = job.get("progress") or {}
    status = job["status"]
    if status == "queued":
        return f"queued (position {job.get('queue_position') or '?'}{_waiting(job)})"
    eta = server_eta_s(job) if eta is None else eta
    if status in ("succeeded", "failed", "cancelled"):
        steps = f"{progress.get('step') or 0}/{progress.get('total_steps') or 0}"
        return f"{status} after {steps} steps"
    step, total = progress.get("step") or 0, progress.get("total_steps") or 0
    phase = progress.get("phase")
    if not total or (step == 0 and phase in SETUP_PHASES):
        return _setup_line(job, phase, eta)
    filled = int(WIDTH * min(step, total) / total)
    bar = "#" * filled + "-" * (WIDTH - filled)
    loss = progress.get("avg_loss")
    loss_text = f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "loss -"
    doing = f" {phase}" if phase in ("saving", "sampling") else ""
    return (
        f"[{bar}] {step}/{total}{doing} epoch {progress.get('epoch') or 0}/"
        f"{progress.get('total_epochs') or 0} {loss_text} ETA {_duration(eta)}"
    )


class ProgressBar:
    """Redraws one line on a terminal (at most 5 times a second); elsewhere (a log, CI)
    prints a line when the status or the set-up phase changes, else at most one per
    ``log_every_s``. Within a run the display never goes back: the event stream replays a
    job's history from its start, and what was already shown is not shown again."""

    def __init__(
        self,
        stream: TextIO = sys.stderr,
        *,
        log_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.log_every_s, self.clock = log_every_s, clock
        self.eta = EtaSmoother(clock=clock)
        self.last = ""
        self._state: tuple[Any, ...] = ()
        self._shown_at = -math.inf
        self._attempt: Any = None
        self._eta_seen: float | None = None
        self._reached: tuple[int, int] = (0, 0)

    def show(self, job: dict[str, Any]) -> None:
        if job.get("attempt") != self._attempt:  # a new run of the job: its own ETA
            self._attempt, self._eta_seen, self._reached = job.get("attempt"), None, (0, 0)
            self.eta.reset()
        progress = job.get("progress") or {}
        phase = progress.get("phase")
        if job["status"] == "running":
            reached = (PHASE_ORDER.get(phase, 3), int(progress.get("step") or 0))
            if reached < self._reached:
                return  # an older moment of this run, replayed
            self._reached = reached
        # Only a new value counts: ``eta_s`` is relative to when the server computed it, so
        # the same value seen again later (a poll, a replayed event) is not news.
        server = server_eta_s(job)
        fresh = server is not None and server != self._eta_seen
        self._eta_seen = server if server is not None else self._eta_seen
        eta = self.eta.update(server if fresh else None)
        line = progress_line(job, eta)
        state = (job["status"], phase if phase in SETUP_PHASES else "training")
        now = self.clock()
        if line == self.last:
            return
        rate = 0.2 if self.interactive else self.log_every_s
        if state == self._state and now - self._shown_at < rate:
            return
        self.last, self._state, self._shown_at = line, state, now
        if self.interactive:
            self.stream.write("\r" + line.ljust(100)[:100])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive and self.last:
            self.stream.write("\n")
            self.stream.flush()
