"""The live event stream: the job's event log (JobEvent), mapped to the SSE event types.

Every stream polls the ordered log by id, so a client that reconnects with
``Last-Event-ID: k`` gets k+1 onward with no gap and no repeat, on SQLite and Postgres
alike, and no broker (Redis or embedded) has to carry anything. Internal kinds
(``queued``, ``started``, ``epoch``, ...) are not shown; their ids are simply skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa

from core.db import Database
from core.db.tables import Job, JobEvent, JobStatus

BATCH = 200
STREAM_TYPES = ("progress", "phase", "artifact", "sample", "finished")


@dataclass(frozen=True)
class StreamEvent:
    id: int
    type: str
    data: dict[str, Any]


def to_stream_event(event_id: int, kind: str, data: dict[str, Any]) -> StreamEvent | None:
    """One log entry as the client sees it; None for kinds the stream does not show."""
    if kind == "progress":
        return StreamEvent(event_id, "progress", data)
    if kind == "phase":
        return StreamEvent(event_id, "phase", {"phase": data.get("phase")})
    if kind == "training_started":
        return StreamEvent(event_id, "phase", {"phase": "training", **data})
    if kind == "artifact":
        shown = {"name": data.get("path"), "kind": data.get("kind"),
                 "epoch": data.get("epoch"), "step": data.get("step")}  # fmt: skip
        return StreamEvent(event_id, "sample" if shown["kind"] == "sample" else "artifact", shown)
    if kind == "finished":
        return StreamEvent(event_id, "finished", data)
    return None


def _read_after(db: Database, job_id: str, after: int) -> tuple[list[StreamEvent], int, bool]:
    """Shown events after ``after``, the last id read, and whether the job has ended."""
    with db.reading() as session:
        # Status first: the end and its `finished` event commit together, so if this read
        # sees the end, the event read after it (a later snapshot on Postgres) sees the event.
        status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
        rows = session.execute(
            sa.select(JobEvent.id, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
            .limit(BATCH)
        ).all()
    last = rows[-1].id if rows else after
    events = [e for r in rows if (e := to_stream_event(r.id, r.kind, r.data or {}))]
    ended = status is None or JobStatus(status).finished
    return events, last, ended and len(rows) < BATCH


async def follow(
    db: Database,
    job_id: str,
    after: int,
    *,
    poll_s: float,
    sleep: Callable[[float], Any] = anyio.sleep,
) -> AsyncIterator[StreamEvent]:
    """Events after id ``after`` until ``finished`` (or the job ended with nothing left)."""
    while True:
        events, after, ended = await anyio.to_thread.run_sync(_read_after, db, job_id, after)
        for event in events:
            yield event
            if event.type == "finished":
                return
        if ended and not events:
            return
        if not events:
            await sleep(poll_s)
