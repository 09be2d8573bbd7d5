"""The reconciler loop: every worker runs one in a thread (conditional updates make many safe).

Each pass re-queues running jobs whose lease expired (or fails them with `worker_lost` once
LORABOX_MAX_ATTEMPTS runs were lost) and wakes a worker for them, refreshes the queue's
positions and forecast (core/jobs/forecast.py: time alone moves them, and makes jobs
eligible: a quota window passing), then, if its own worker is idle and a job it can run is
eligible, wakes it without the broker (worker/runner.py: wake_locally). So an eligible job
starts within LORABOX_RECONCILE_INTERVAL_S whatever happens to messages (a hold released, a
quota window passed, a worker freed, a message lost). See core/jobs/recovery.py and
docs/reliability.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.db import Database
from core.jobs.broker import Broker, send_or_defer
from core.jobs.forecast import refresh_forecast
from core.jobs.preemption import preempt_if_due
from core.jobs.recovery import reconcile
from core.settings import Settings

log = logging.getLogger(__name__)


class Reconciler(threading.Thread):
    def __init__(self, settings: Settings, wake: Callable[[], float | None] | None = None) -> None:
        super().__init__(name="lorabox-reconciler", daemon=True)
        self.settings = settings
        # Starts this process's worker on an eligible job if it is idle; returns the seconds
        # until a job still left to its message becomes this worker's to start (or None).
        self.wake = wake
        self.db = Database.for_settings(settings, pool_size=1)
        self.broker = Broker(settings)  # its own connection: kombu's are not thread-safe
        self.stopped = threading.Event()

    def run_once(self) -> float | None:
        """One pass; returns the seconds until a job still left to its message is this
        worker's to start (None: nothing to retry before the next pass)."""
        ids = reconcile(self.db, self.settings)
        for job_id in ids:
            send_or_defer(self.broker, job_id)
        if ids:
            log.warning("reconciler re-enqueued %s", ", ".join(ids))
        # Time moves the forecast even when nothing else does (docs/estimates.md, "Forecast").
        with self.db.writing() as session:
            preempt_if_due(session, self.settings)  # docs/scheduling.md, "Preemption"
            refresh_forecast(session, self.settings)
        return self.wake_idle()  # after the refresh: a job that became eligible starts

    def wake_idle(self) -> float | None:
        return self.wake() if self.wake is not None else None

    def run(self) -> None:
        while True:
            next_pass = time.monotonic() + self.settings.reconcile_interval_s
            again = self._guarded(self.run_once)
            # A job still left to its message is woken when that grace ends, not a whole
            # interval later: a lost message delays a start by the grace alone.
            while again is not None and time.monotonic() + again < next_pass:
                if self.stopped.wait(again):
                    return
                again = self._guarded(self.wake_idle)
            if self.stopped.wait(max(0.0, next_pass - time.monotonic())):
                return

    @staticmethod
    def _guarded(step: Callable[[], float | None]) -> float | None:
        try:
            return step()
        except Exception:  # noqa: BLE001 - a database or broker outage must not end the loop
            log.exception("reconciler pass failed; retrying")
            return None

    def stop(self) -> None:
        self.stopped.set()
