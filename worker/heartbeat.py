"""The worker's own row: what its device has and what it is doing, every heartbeat.

At start the worker settles its peak FLOP/s (the table's figure for a known GPU, the one an
earlier start measured, or a fresh matmul probe) and writes its row; then, every
``LORABOX_WORKER_HEARTBEAT_S``, idle or busy, a thread refreshes the device's total and free
memory, its state and its job. The row stops counting ``LORABOX_WORKER_EXPIRY_S`` after the
last heartbeat, or at once when the worker stops cleanly (``offline``).
"""

from __future__ import annotations

import logging
import threading

from core.db import Database
from core.db.tables import utcnow
from core.workers.peaks import table_peak
from core.workers.registry import BUSY, IDLE, OFFLINE, report_worker, set_activity, stored_peak
from worker.device import probe_peak
from worker.runner import WorkerContext

log = logging.getLogger(__name__)


def settle_peak(ctx: WorkerContext) -> tuple[float | None, str | None]:
    """(FLOP/s, "table" | "probe"): the table's figure for a GPU it knows; otherwise the peak
    this worker measured at an earlier start (its learned efficiency is relative to it), or
    a new probe's."""
    device = ctx.device
    if device.gpu is not None and (row := table_peak(device.gpu.name)) is not None:
        return row.flops, "table"
    with ctx.db.reading() as session:
        stored = stored_peak(session, device.key)
    if stored is not None:
        return stored
    measured = probe_peak(device.kind, ctx.settings.trainer_start_method)
    if measured is None:
        log.error("worker %s has no peak FLOP/s: it reports, but doesn't count", device.name)
        return None, None
    log.info("worker %s: matmul probe %.3g FLOP/s", device.name, measured)
    return measured, "probe"


class Heartbeat(threading.Thread):
    def __init__(self, ctx: WorkerContext, peak: tuple[float | None, str | None]) -> None:
        super().__init__(name="lorabox-worker-heartbeat", daemon=True)
        self.ctx, self.peak = ctx, peak
        self.db = Database.for_settings(ctx.settings, pool_size=1)
        self.started_at = utcnow()
        self.stopped = threading.Event()

    def beat(self) -> None:
        """One heartbeat: the device's facts now, and whether a job runs."""
        job_id = self.ctx.activity.job_id
        report = self.ctx.device.report(*self.peak)
        with self.db.writing() as session:
            report_worker(
                session, self.ctx.settings, report,
                state=BUSY if job_id else IDLE, current_job_id=job_id,
                process=self.ctx.worker_id, started_at=self.started_at,
            )  # fmt: skip

    def run(self) -> None:
        while not self.stopped.wait(self.ctx.settings.worker_heartbeat_s):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a database outage must not end the heartbeat
                log.warning("worker heartbeat failed; retrying", exc_info=True)

    def stop(self) -> None:
        """No more heartbeats, and the row stops counting now rather than at its expiry."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=5)
        try:
            with self.db.writing() as session:
                set_activity(session, self.ctx.device.key, state=OFFLINE, current_job_id=None)
        except Exception:  # noqa: BLE001 - the row expires by itself
            log.warning("could not mark worker %s offline", self.ctx.device.name)
        self.db.dispose()


def start_heartbeat(ctx: WorkerContext) -> Heartbeat:
    """Settles the peak, writes the row once (before the worker takes a job), then beats."""
    heartbeat = Heartbeat(ctx, settle_peak(ctx))
    heartbeat.beat()
    heartbeat.start()
    return heartbeat
