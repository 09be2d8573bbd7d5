"""The per-job event log: one ordered table whose integer ids clients can resume from."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.db.tables import JobEvent


def record_event(
    session: Session, job_id: str, kind: str, data: dict[str, Any] | None = None, *, attempt: int
) -> None:
    session.add(JobEvent(job_id=job_id, attempt=attempt, kind=kind, data=data or {}))
