"""Worker rows: what each worker last said it has, which ones count, and what they learned.

A worker writes its row at start and every ``worker_heartbeat_s`` (``worker/heartbeat.py``);
the row is keyed by host and GPU UUID, so a restart updates the same row and keeps what the
worker learned. A worker counts while it was seen within ``worker_expiry_s`` and has not
said it stopped ("offline"), and once it knows its peak FLOP/s (the time model needs it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.tables import Worker, utcnow
from core.settings import Settings
from core.workers.model import (
    ALLOWANCES,
    EFFICIENCY,
    RunTimings,
    WorkerInfo,
    learned,
    observed_efficiency,
)

log = logging.getLogger(__name__)
IDLE, BUSY, OFFLINE = "idle", "busy", "offline"


@dataclass(frozen=True)
class DeviceReport:
    """What a worker says about its device at a heartbeat (``worker/device.py`` reads it)."""

    key: str
    name: str
    host: str
    device: str  # "cuda" | "cpu"
    gpu_name: str | None
    gpu_uuid: str | None
    total_memory_bytes: int
    free_memory_bytes: int
    compute_capability: str | None
    torch_version: str | None
    cuda_version: str | None
    driver_version: str | None
    peak_flops: float | None
    peak_source: str | None


def worker_info(row: Worker) -> WorkerInfo:
    return WorkerInfo(
        key=row.key, name=row.name, host=row.host, gpu_name=row.gpu_name,
        gpu_uuid=row.gpu_uuid, total_memory_bytes=row.total_memory_bytes,
        free_memory_bytes=row.free_memory_bytes, compute_capability=row.compute_capability,
        torch_version=row.torch_version, cuda_version=row.cuda_version,
        peak_flops=row.peak_flops or 0.0, peak_source=row.peak_source or "",
        efficiency=row.efficiency, allowances_s=dict(row.allowances_s),
        state=row.state, current_job_id=row.current_job_id, seen_at=row.seen_at,
        device=row.device, driver_version=row.driver_version,
        runs_learned=row.runs_learned, process=row.process,
        started_at=row.started_at,
    )  # fmt: skip


def counted_workers(session: Session, settings: Settings) -> list[WorkerInfo]:
    """Workers seen within ``worker_expiry_s``, not stopped, with a known peak; by name."""
    cutoff = utcnow() - timedelta(seconds=settings.worker_expiry_s)
    rows = session.scalars(
        sa.select(Worker)
        .where(Worker.seen_at >= cutoff, Worker.state != OFFLINE, Worker.peak_flops > 0)
        .order_by(Worker.name, Worker.key)
    )
    return [worker_info(row) for row in rows]


def all_workers(session: Session) -> list[WorkerInfo]:
    return [worker_info(row) for row in session.scalars(sa.select(Worker).order_by(Worker.name))]


def stored_peak(session: Session, key: str) -> tuple[float, str] | None:
    """The peak a worker measured at an earlier start (reused: its learned efficiency is
    relative to it, so a fresh, noisier probe would shift every estimate)."""
    row = session.execute(
        sa.select(Worker.peak_flops, Worker.peak_source).where(Worker.key == key)
    ).first()
    if row is None or not row.peak_flops or row.peak_source != "probe":
        return None
    return float(row.peak_flops), row.peak_source


def report_worker(
    session: Session,
    settings: Settings,
    report: DeviceReport,
    *,
    state: str,
    current_job_id: str | None,
    process: str,
    started_at: datetime,
) -> None:
    """Inserts or refreshes the worker's row; what it learned is kept across restarts."""
    facts: dict[str, Any] = {
        "name": report.name, "host": report.host, "device": report.device,
        "gpu_name": report.gpu_name, "gpu_uuid": report.gpu_uuid,
        "total_memory_bytes": report.total_memory_bytes,
        "free_memory_bytes": report.free_memory_bytes,
        "compute_capability": report.compute_capability,
        "torch_version": report.torch_version, "cuda_version": report.cuda_version,
        "driver_version": report.driver_version, "peak_flops": report.peak_flops,
        "peak_source": report.peak_source, "state": state, "current_job_id": current_job_id,
        "process": process, "started_at": started_at, "seen_at": utcnow(),
    }  # fmt: skip
    if _update(session, report.key, facts):
        return
    try:
        with session.begin_nested():  # two processes on one device: the second updates
            session.add(
                Worker(
                    key=report.key, efficiency=settings.worker_default_efficiency,
                    allowances_s=settings.worker_allowances(), observations={},
                    runs_learned=0, **facts,
                )
            )  # fmt: skip
    except IntegrityError:
        _update(session, report.key, facts)


def _update(session: Session, key: str, values: Mapping[str, Any], *where: Any) -> bool:
    result = session.execute(
        sa.update(Worker)
        .where(Worker.key == key, *where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def set_activity(session: Session, key: str, *, state: str, current_job_id: str | None) -> None:
    """busy with a job, idle, or offline (a worker that stopped no longer counts). Only a
    heartbeat brings an offline row back: the job a stopping worker hands back must not."""
    still = [] if state == OFFLINE else [Worker.state != OFFLINE]
    _update(session, key, {"state": state, "current_job_id": current_job_id}, *still)


def learn_from_run(
    session: Session, key: str, *, step_flops: int | None, timings: RunTimings
) -> WorkerInfo | None:
    """Moves the worker's efficiency and allowances toward what one finished run measured
    (``core.workers.model.learned``); returns the updated worker, None without a row."""
    row = session.get(Worker, key, with_for_update=True)
    if row is None:
        return None
    seen = {name: list(values) for name, values in row.observations.items()}
    if step_flops and timings.s_per_step and row.peak_flops:
        observed = observed_efficiency(step_flops, timings.s_per_step, row.peak_flops)
        row.efficiency, seen[EFFICIENCY] = learned(seen.get(EFFICIENCY, []), observed)
        row.runs_learned += 1
    allowances = dict(row.allowances_s)
    for name, seconds in timings.per_unit().items():
        value, seen[name] = learned(seen.get(name, []), seconds)
        allowances[name] = round(value, 4)
    row.allowances_s = {name: allowances.get(name, 0.0) for name in ALLOWANCES}
    row.observations = seen
    session.flush()
    return worker_info(row)
