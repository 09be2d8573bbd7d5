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
from collections.abc import Callable

from core.db import Database
from core.jobs.broker import Broker, send_or_defer
from core.jobs.forecast import refresh_forecast
from core.jobs.preemption import preempt_if_due
from core.jobs.recovery import reconcile
from core.settings import Settings

log = logging.getLogger(__name__)


class Reconciler(threading.Thread):
    def __init__(self, settings: Settings, wake: Callable[[], bool] | None = None) -> None:
        super().__init__(name="lorabox-reconciler", daemon=True)
        self.settings = settings
        self.wake = wake  # starts this process's worker on an eligible job, if it is idle
        self.db = Database.for_settings(settings, pool_size=1)
        self.broker = Broker(settings)  # its own connection: kombu's are not thread-safe
        self.stopped = threading.Event()

    def run_once(self) -> list[str]:
        ids = reconcile(self.db, self.settings)
        for job_id in ids:
            send_or_defer(self.broker, self.db, self.settings, job_id)
        if ids:
            log.warning("reconciler re-enqueued %s", ", ".join(ids))
        # Time moves the forecast even when nothing else does (docs/estimates.md, "Forecast").
        with self.db.writing() as session:
            preempt_if_due(session, self.settings)  # docs/scheduling.md, "Preemption"
            refresh_forecast(session, self.settings)
        if self.wake is not None:  # after the refresh: a job that became eligible starts
            self.wake()
        return ids

    def run(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a database or broker outage must not end the loop
                log.exception("reconciler pass failed; retrying")
            if self.stopped.wait(self.settings.reconcile_interval_s):
                return

    def stop(self) -> None:
        self.stopped.set()
