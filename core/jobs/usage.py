"""GPU usage: the seconds each user's jobs held a worker (docs/scheduling.md, "Usage").

Every attempt of a job opens one `GpuUsage` row at its claim and closes it when the attempt
ends, whatever the outcome (a preemption or a lost lease included); an open row counts up to
now, so a running job's usage grows live. Two sums read the ledger:

- fair share orders owners by *decayed* usage: a second spent ``age`` seconds ago weighs
  ``2 ** (-age / half_life)``, as Slurm's fair-share factor decays past usage
  (PriorityDecayHalfLife). Over a stretch ``[start, end]`` that integrates in closed form to
  ``half_life / ln 2 * (2 ** (-(now - end) / half_life) - 2 ** (-(now - start) / half_life))``.
- quotas count *undecayed* seconds inside a rolling window ``[now - window, now]``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import GpuUsage, utcnow

# Past this many half-lives a stretch weighs under 2**-30 of its length: not worth reading.
FORGOTTEN_AFTER_HALF_LIVES = 30


def decayed_seconds(start: datetime, end: datetime, now: datetime, half_life_s: float) -> float:
    """The decayed weight at `now` of the worker time held from `start` to `end`."""
    age_end = max((now - end).total_seconds(), 0.0)
    age_start = max((now - start).total_seconds(), age_end)
    weight = 2 ** (-age_end / half_life_s) - 2 ** (-age_start / half_life_s)
    return half_life_s / math.log(2) * weight


def window_seconds(start: datetime, end: datetime, now: datetime, window_s: float) -> float:
    """Undecayed seconds of ``[start, end]`` inside ``[now - window_s, now]``."""
    since = now - timedelta(seconds=window_s)
    return max((min(end, now) - max(start, since)).total_seconds(), 0.0)


def _stretches(
    session: Session, since: datetime, user_ids: Iterable[int] | None = None
) -> list[tuple[int, datetime, datetime | None]]:
    query = sa.select(GpuUsage.user_id, GpuUsage.started_at, GpuUsage.ended_at).where(
        sa.or_(GpuUsage.ended_at.is_(None), GpuUsage.ended_at >= since)
    )
    if user_ids is not None:
        query = query.where(GpuUsage.user_id.in_(list(user_ids)))
    return [(u, s, e) for u, s, e in session.execute(query)]


def decayed_usage(
    session: Session, *, half_life_s: float, now: datetime | None = None
) -> dict[int, float]:
    """Each user's decayed usage at `now`, in seconds; users without usage are absent."""
    now = now or utcnow()
    since = now - timedelta(seconds=FORGOTTEN_AFTER_HALF_LIVES * half_life_s)
    usage: dict[int, float] = defaultdict(float)
    for user_id, start, end in _stretches(session, since):
        usage[user_id] += decayed_seconds(start, end or now, now, half_life_s)
    return dict(usage)


def window_usage(
    session: Session, *, user_ids: Iterable[int], window_s: float, now: datetime | None = None
) -> dict[int, float]:
    """Each given user's undecayed seconds inside the rolling window ending at `now`."""
    now = now or utcnow()
    usage: dict[int, float] = defaultdict(float)
    for user_id, start, end in _stretches(session, now - timedelta(seconds=window_s), user_ids):
        usage[user_id] += window_seconds(start, end or now, now, window_s)
    return dict(usage)


def open_usage(
    session: Session,
    *,
    user_id: int,
    job_id: str,
    attempt: int,
    worker_key: str | None,
    now: datetime | None = None,
) -> None:
    """Start counting an attempt's worker time (in the claim's transaction)."""
    session.add(
        GpuUsage(
            user_id=user_id,
            job_id=job_id,
            attempt=attempt,
            worker_key=worker_key,
            started_at=now or utcnow(),
        )
    )


def close_usage(
    session: Session, *, job_id: str, attempt: int | None = None, now: datetime | None = None
) -> int:
    """Stop counting: the attempt's open row (every open row of the job when `attempt` is
    None, as a reclaimed lease's). Returns the rows closed; closing twice closes nothing."""
    query = sa.update(GpuUsage).where(GpuUsage.job_id == job_id, GpuUsage.ended_at.is_(None))
    if attempt is not None:
        query = query.where(GpuUsage.attempt == attempt)
    done = session.execute(
        query.values(ended_at=now or utcnow()).execution_options(synchronize_session=False)
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]
