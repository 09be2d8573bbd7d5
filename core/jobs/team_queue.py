"""The team's view of the queue (``GET /v1/queue``): everyone's running and queued jobs in
the policy's order, with what a colleague may see of them (name, owner, base model, place,
forecast, priority, hold, why it waits) and nothing of their params, datasets or files.

Positions, forecasts and reasons are read as stored on the rows: the scheduler computes them
at each queue change (``core.jobs.forecast``, docs/scheduling.md), so this page costs one
indexed read whatever the queue's length. Running jobs come first, then queued ones by
``queue_position`` (a row not yet placed goes last, in submission order). Pages are keyset
pages over that order, so a page stays stable while jobs are added behind it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import Job, JobStatus, QueueState, User
from core.errors import InvalidInput, Problem

MAX_PAGE = 500
# Stands for "not placed yet": after every stored position (an INTEGER column).
UNPLACED = 2**31 - 1

_JOBS, _USERS = Job.__table__, User.__table__
# The shown columns: a colleague's job is a name and a place, not its contents.
SHOWN = ("id", "owner_id", "name", "status", "base_model", "created_at", "started_at",
         "queue_position", "estimated_start_at", "estimated_finish_at", "priority", "held",
         "blocked_reason")  # fmt: skip
# The page's order as one key: running (0) before queued (1), then the stored position, then
# submission. ``sa.tuple_`` comparisons are row values on both SQLite and Postgres.
_GROUP = sa.case((_JOBS.c.status == JobStatus.RUNNING, 0), else_=1)
_PLACE = sa.case(
    (_JOBS.c.status == JobStatus.QUEUED, sa.func.coalesce(_JOBS.c.queue_position, UNPLACED)),
    else_=0,
)
_KEY = (_GROUP, _PLACE, _JOBS.c.created_at, _JOBS.c.id)
_PAGE = (
    sa.select(*(_JOBS.c[name] for name in SHOWN), _USERS.c.name.label("owner_name"))
    .join(_USERS, _USERS.c.id == _JOBS.c.owner_id)
    .where(_JOBS.c.status.in_([JobStatus.RUNNING, JobStatus.QUEUED]))
    .order_by(*_KEY)
)
_COUNT = sa.select(sa.func.count()).select_from(_JOBS)
# The queue's state and its size in one round trip.
_SUMMARY = sa.select(
    sa.select(QueueState.paused).where(QueueState.id == 1).scalar_subquery(),
    _COUNT.where(_JOBS.c.status == JobStatus.RUNNING).scalar_subquery(),
    _COUNT.where(_JOBS.c.status == JobStatus.QUEUED).scalar_subquery(),
)


@dataclass(frozen=True)
class QueuePage:
    rows: Sequence[Any]  # SHOWN columns and ``owner_name``
    next_cursor: str | None
    paused: bool
    running: int
    queued: int


def read_queue(session: Session, *, limit: int = 100, cursor: str | None = None) -> QueuePage:
    """One page of the queue, and the queue's state (paused, how many run and wait)."""
    query = _PAGE
    if cursor:
        query = query.where(sa.tuple_(*_KEY) > sa.tuple_(*_typed(decode_cursor(cursor))))
    limit = max(1, min(limit, MAX_PAGE))
    rows = session.execute(query.limit(limit + 1)).all()
    paused, running, queued = session.execute(_SUMMARY).one()
    page = rows[:limit]
    more = len(rows) > limit
    return QueuePage(page, encode_cursor(page[-1]) if more else None, bool(paused), running, queued)


def _key_of(row: Any) -> tuple[int, int, str, str]:
    if row.status == JobStatus.RUNNING:
        return 0, 0, row.created_at.isoformat(), row.id
    place = UNPLACED if row.queue_position is None else row.queue_position
    return 1, place, row.created_at.isoformat(), row.id


def encode_cursor(row: Any) -> str:
    raw = json.dumps(_key_of(row)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int, datetime, str]:
    try:
        group, place, created, job_id = json.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        return int(group), int(place), datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput([Problem(("query", "cursor"), "invalid cursor")]) from exc


def _typed(key: tuple[int, int, datetime, str]) -> list[sa.BindParameter[Any]]:
    """The cursor's values bound with their columns' types (the timestamp's UTC handling)."""
    return [sa.literal(value, column.type) for value, column in zip(key, _KEY, strict=True)]
