"""GPU-time quotas over a rolling window (docs/scheduling.md, "Quotas"), now and played forward.

An owner with a budget is *spent* at time ``t`` while the undecayed seconds of their jobs'
worker time inside ``[t - window, t]`` reach the budget (``core/jobs/usage.py:
window_seconds``, the claim's own rule). The claim asks it at ``now``; the forecast
(``core/jobs/play.py``) asks it at every played time, with the runs it plays added, and
asks when a spent owner's window frees enough for their next job: the window slides past old
stretches, so the seconds inside it fall linearly between the stretches' ends and starts
shifted by the window, and the first moment under budget is found segment by segment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import GpuUsage, User
from core.jobs.usage import window_seconds

Stretch = tuple[datetime, datetime | None]  # worker time held; None: still held, end unknown


@dataclass(frozen=True)
class Quota:
    """An owner's budget, and their worker time that can still fall inside its window (a
    stretch still open is counted up to the moment the quota was read)."""

    budget_s: float
    window_s: float
    stretches: tuple[tuple[datetime, datetime], ...] = ()


def read_quotas(session: Session, now: datetime) -> dict[int, Quota]:
    """Every owner with a budget, with their stretches inside the window ending ``now``."""
    owners = session.execute(
        sa.select(User.id, User.quota_gpu_seconds, User.quota_window_s).where(
            User.quota_gpu_seconds.is_not(None), User.quota_window_s.is_not(None)
        )
    ).all()
    if not owners:
        return {}
    earliest = now - timedelta(seconds=max(float(w or 0) for _, _, w in owners))
    rows = session.execute(
        sa.select(GpuUsage.user_id, GpuUsage.started_at, GpuUsage.ended_at).where(
            GpuUsage.user_id.in_([o for o, _, _ in owners]),
            sa.or_(GpuUsage.ended_at.is_(None), GpuUsage.ended_at >= earliest),
        )
    ).all()
    held: dict[int, list[tuple[datetime, datetime]]] = {o: [] for o, _, _ in owners}
    for owner, start, end in rows:
        held[owner].append((start, min(end or now, now)))
    return {
        owner: Quota(float(budget or 0), float(window or 0), tuple(held[owner]))
        for owner, budget, window in owners
    }


def used_s(stretches: Iterable[Stretch], window_s: float, at: datetime) -> float:
    """Undecayed seconds of ``stretches`` inside the window ending ``at`` (an open stretch
    counted up to ``at``)."""
    return sum(window_seconds(start, end or at, at, window_s) for start, end in stretches)


def frees_at(
    stretches: Iterable[Stretch], budget_s: float, window_s: float, after: datetime
) -> datetime | None:
    """The first whole second from ``after`` on at which the seconds inside the window are
    under the budget (``after`` itself when they are), or None: never without new
    information (a stretch still open, of unknown end, or a zero budget)."""
    stretches = list(stretches)
    if used_s(stretches, window_s, after) < budget_s:
        return after
    held = [(start, end) for start, end in stretches if end is not None]
    if budget_s <= 0 or len(held) < len(stretches):
        return None
    window = timedelta(seconds=window_s)
    # The seconds inside the window are linear in time between these points.
    points = sorted(
        {p for start, end in held for p in (start, end, start + window, end + window)} | {after}
    )
    points = [p for p in points if p >= after]
    for left, right in zip(points, points[1:], strict=False):
        used_left, used_right = used_s(held, window_s, left), used_s(held, window_s, right)
        if used_right < budget_s:
            # Under budget from the crossing on: the claim's rule is "spent while used >=
            # budget", so the first whole second after the crossing.
            span = (right - left).total_seconds()
            crossing = span * (used_left - budget_s) / (used_left - used_right)
            return min(left + timedelta(seconds=math.floor(crossing) + 1), right)
    return None  # unreachable: past the last stretch's end + window nothing is inside it


class QuotaClock:
    """Quotas as the forecast plays the queue forward: each run it plays is added to its
    owner's stretches, so a run that spends the budget holds the owner's next job until the
    window frees enough, as the claim would.

    The play asks at times that never go back, so a stretch that has left the window is
    dropped for good: the seconds inside a window are then summed over the few stretches
    it can hold, not over every run played (3,000 queued jobs of a spent owner otherwise
    take seconds to play)."""

    def __init__(self, quotas: Mapping[int, Quota]) -> None:
        self.quotas = quotas
        self.held: dict[int, list[Stretch]] = {o: list(q.stretches) for o, q in quotas.items()}
        self.clock: datetime | None = None  # the latest time asked

    def __bool__(self) -> bool:
        return bool(self.quotas)

    def add(self, owner: int, start: datetime, end: datetime | None) -> None:
        if owner in self.held:
            self.held[owner].append((start, end))

    def spent(self, owner: int, at: datetime) -> bool:
        quota = self.quotas.get(owner)
        return quota is not None and used_s(self._inside(owner, at), quota.window_s, at) >= (
            quota.budget_s
        )

    def spent_owners(self, at: datetime) -> set[int]:
        return {owner for owner in self.quotas if self.spent(owner, at)}

    def frees_at(self, owner: int, after: datetime) -> datetime | None:
        quota = self.quotas.get(owner)
        if quota is None:
            return after
        return frees_at(self._inside(owner, after), quota.budget_s, quota.window_s, after)

    def _inside(self, owner: int, at: datetime) -> list[Stretch]:
        """The owner's stretches that still reach into the window ending ``at``."""
        assert self.clock is None or at >= self.clock, "a quota clock never goes back"
        self.clock = at
        since = at - timedelta(seconds=self.quotas[owner].window_s)
        self.held[owner] = [(s, e) for s, e in self.held[owner] if e is None or e > since]
        return self.held[owner]
