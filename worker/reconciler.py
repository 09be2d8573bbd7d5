"""The reconciler loop: every worker runs one in a thread (conditional updates make many safe).

Each pass re-queues running jobs whose lease expired (or fails them with `worker_lost` once
LORABOX_MAX_ATTEMPTS runs were lost), sends a fresh message for queued jobs nobody claimed
for LORABOX_REQUEUE_AFTER_S, and refreshes the queue's forecast (core/jobs/forecast.py).
See core/jobs/recovery.py and docs/reliability.md.
"""

from __future__ import annotations

import logging
import threading

from core.db import Database
from core.jobs.broker import Broker, send_or_defer
from core.jobs.forecast import refresh_forecast
from core.jobs.recovery import reconcile
from core.settings import Settings

log = logging.getLogger(__name__)


class Reconciler(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="lorabox-reconciler", daemon=True)
        self.settings = settings
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
            refresh_forecast(session, self.settings)
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
