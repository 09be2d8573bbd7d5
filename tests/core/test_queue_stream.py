"""The event stream's `queue` event (core/watch/stream.py: follow): sent at the start while the
job waits and whenever its stored place, forecast or reason changes, never for a poll that
changed nothing, and not once the job runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa

from core.db import Database, Job, User
from core.db.migrate import upgrade
from core.db.tables import JobEvent, JobStatus
from core.watch.stream import StreamEvent, follow

START = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)


def test_a_queue_event_follows_each_change_of_the_stored_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    upgrade(url)
    db = Database(url, pool_size=1)
    with db.writing() as session:
        session.add(User(id=1, name="ann"))
        session.flush()
        job = Job(owner_id=1, base_model="m", dataset_id="d", params={}, config={}, resolved={},
                  plan={}, queue_position=3)  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id

    def change(**values: Any) -> None:
        with db.writing() as session:
            session.execute(sa.update(Job).where(Job.id == job_id).values(**values))

    steps = iter([
        lambda: None,  # nothing changed: no event
        lambda: change(queue_position=1, estimated_start_at=START),
        lambda: change(blocked_reason="held", queue_position=None, estimated_start_at=None),
        lambda: change(status=JobStatus.RUNNING, blocked_reason=None),
        lambda: _finish(db, job_id),
    ])  # fmt: skip

    async def sleep(_: float) -> None:
        next(steps)()

    async def collect() -> list[StreamEvent]:
        return [event async for event in follow(db, job_id, 0, poll_s=0, sleep=sleep)]

    events = anyio.run(collect)
    db.dispose()
    queue = [e.data for e in events if e.type == "queue"]
    assert queue == [
        {"queue_position": 3, "estimated_start_at": None, "estimated_finish_at": None,
         "blocked_reason": None},
        {"queue_position": 1, "estimated_start_at": START.isoformat(),
         "estimated_finish_at": None, "blocked_reason": None},
        {"queue_position": None, "estimated_start_at": None, "estimated_finish_at": None,
         "blocked_reason": "held"},
    ]  # fmt: skip
    assert events[-1].type == "finished"


def _finish(db: Database, job_id: str) -> None:
    with db.writing() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(status=JobStatus.SUCCEEDED))
        session.add(JobEvent(job_id=job_id, attempt=1, kind="finished",
                             data={"status": "succeeded"}))  # fmt: skip
