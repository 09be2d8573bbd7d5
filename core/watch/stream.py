"""The live event stream: the job's event log (JobEvent), mapped to the SSE event types.

Every stream polls the ordered log by id, so a client that reconnects with
``Last-Event-ID: k`` gets k+1 onward with no gap and no repeat, on SQLite and Postgres
alike, and no broker (Redis or embedded) has to carry anything. Internal kinds
(``queued``, ``started``, ``epoch``, ...) are not shown; their ids are simply skipped.

A ``queue`` event (position, forecast, why it waits) is not in the log: the stream compares
the job's stored ``queue_position`` / ``estimated_start_at`` / ``estimated_finish_at`` /
``blocked_reason`` at each of its polls and sends one when they changed (and once at the
start while the job waits), so a submit that moves 3,000 queued jobs writes no event per job
(docs/scheduling.md, "Positions and forecasts"). It carries the id of the last log entry
read, so a reconnect with it neither skips nor repeats log entries.
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
STREAM_TYPES = ("progress", "phase", "artifact", "sample", "finished", "queue")


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


_PLACE = (Job.status, Job.queue_position, Job.estimated_start_at, Job.estimated_finish_at,
          Job.blocked_reason)  # fmt: skip


def queue_data(row: Any) -> dict[str, Any] | None:
    """The ``queue`` event's data for a job row; None unless the job waits in the queue."""
    if row is None or row.status != JobStatus.QUEUED:
        return None
    start, finish = row.estimated_start_at, row.estimated_finish_at
    return {"queue_position": row.queue_position,
            "estimated_start_at": start.isoformat() if start else None,
            "estimated_finish_at": finish.isoformat() if finish else None,
            "blocked_reason": row.blocked_reason}  # fmt: skip


@dataclass
class _Read:
    events: list[StreamEvent]
    last: int
    ended: bool
    queue: dict[str, Any] | None


def _read_after(db: Database, job_id: str, after: int) -> _Read:
    """Shown events after ``after``, the last id read, whether the job has ended, and its
    place while it waits."""
    with db.reading() as session:
        # Status first: the end and its `finished` event commit together, so if this read
        # sees the end, the event read after it (a later snapshot on Postgres) sees the event.
        place = session.execute(sa.select(*_PLACE).where(Job.id == job_id)).first()
        status = place.status if place is not None else None
        rows = session.execute(
            sa.select(JobEvent.id, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
            .limit(BATCH)
        ).all()
    last = rows[-1].id if rows else after
    events = [e for r in rows if (e := to_stream_event(r.id, r.kind, r.data or {}))]
    ended = status is None or JobStatus(status).finished
    return _Read(events, last, ended and len(rows) < BATCH, queue_data(place))


async def follow(
    db: Database,
    job_id: str,
    after: int,
    *,
    poll_s: float,
    sleep: Callable[[float], Any] = anyio.sleep,
) -> AsyncIterator[StreamEvent]:
    """Events after id ``after`` until ``finished`` (or the job ended with nothing left)."""
    place: dict[str, Any] | None = None
    while True:
        read = await anyio.to_thread.run_sync(_read_after, db, job_id, after)
        events, after, ended = read.events, read.last, read.ended
        if read.queue is not None and read.queue != place:
            yield StreamEvent(after, "queue", read.queue)
        place = read.queue
        for event in events:
            yield event
            if event.type == "finished":
                return
        if ended and not events:
            return
        if not events:
            await sleep(poll_s)
