"""The scheduling policy: which queued job a free worker takes next (docs/scheduling.md).

Pure functions over rows the database gives, so the claim (``core/jobs/claim.py``), the
forecast (``core/jobs/play.py: play_queue``) and the tests apply one policy:

- :func:`blocked_reason` says why a queued job may not start now (``held``, ``quota``,
  ``paused``; ``None`` when it is eligible). ``gpu_memory`` (short of this worker's free
  memory at a claim) and ``no_fitting_worker`` (fits no counted worker at all) are about
  workers, not about the job, and are set by the claim and the forecast.
- :func:`rank` orders eligible jobs: priority tier (``high`` > ``normal`` > ``low``), then,
  under ``LORABOX_SCHEDULER=fair``, the owner's decayed usage, least first
  (``core/jobs/usage.py``), then submission time. ``fifo`` skips the usage. A user's own
  jobs of one tier share their owner's usage, so they keep their submission order.
- :func:`first_fitting` reads the queue and answers "the job the policy ranks first that
  fits this much free memory", optionally among other users' jobs only (preemption).

Usage is compared rounded to the millisecond: two owners whose usage differs by float noise
(the same seconds summed in another order) tie and fall back to submission time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar, get_args

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import Job, JobStatus, utcnow
from core.jobs.queue import is_paused
from core.jobs.quotas import Quota, QuotaClock, read_quotas
from core.jobs.submission import Priority
from core.jobs.usage import decayed_usage
from core.settings import Settings
from core.workers import placement

TIERS: tuple[str, ...] = get_args(Priority)  # best first
HELD, QUOTA, PAUSED = "held", "quota", "paused"
Scheduler = Literal["fair", "fifo"]
USAGE_DECIMALS = 3  # compare usage to the millisecond (see the module's docstring)


class Queued(Protocol):
    """What the policy reads of a queued job (a row, or a test's stand-in)."""

    @property
    def id(self) -> str: ...
    @property
    def owner_id(self) -> int: ...
    @property
    def priority(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def held(self) -> bool: ...


J = TypeVar("J", bound=Queued)


@dataclass(frozen=True)
class Waiting:
    """A queued job as the policy sees it."""

    id: str
    owner_id: int
    priority: str
    created_at: datetime
    held: bool
    estimate: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Standing:
    """The queue's state at ``now`` that eligibility and order read: whether it is paused,
    each owner's decayed usage (seconds), and the owners whose quota is spent."""

    now: datetime
    paused: bool = False
    usage: Mapping[int, float] = field(default_factory=dict)
    over_quota: frozenset[int] = frozenset()
    quotas: Mapping[int, Quota] = field(default_factory=dict)  # the forecast plays them on


def tier(priority: str | None) -> int:
    """0 for ``high``; an unknown value ranks as ``normal``."""
    return TIERS.index(priority) if priority in TIERS else 1


def order_key(job: Queued, usage: Mapping[int, float], scheduler: Scheduler) -> tuple[Any, ...]:
    """The policy's sort key: tier, owner's usage (``fair`` only), submission time, id."""
    share = round(usage.get(job.owner_id, 0.0), USAGE_DECIMALS) if scheduler == "fair" else 0.0
    return (tier(job.priority), share, job.created_at, job.id)


def rank(jobs: Iterable[J], usage: Mapping[int, float], scheduler: Scheduler) -> list[J]:
    """``jobs`` in the policy's order (eligibility is :func:`blocked_reason`'s business)."""
    return sorted(jobs, key=lambda job: order_key(job, usage, scheduler))


def blocked_reason(job: Queued, standing: Standing) -> str | None:
    """Why ``job`` may not start now, the job's own reason first: ``held``, ``quota``,
    ``paused``; None when it is eligible."""
    if job.held:
        return HELD
    if job.owner_id in standing.over_quota:
        return QUOTA
    if standing.paused:
        return PAUSED
    return None


def eligible(jobs: Iterable[J], standing: Standing) -> list[J]:
    return [job for job in jobs if blocked_reason(job, standing) is None]


def read_standing(session: Session, settings: Settings, now: datetime | None = None) -> Standing:
    now = now or utcnow()
    quotas = read_quotas(session, now)
    return Standing(
        now=now,
        paused=is_paused(session),
        usage=decayed_usage(session, half_life_s=settings.fairshare_half_life_s, now=now),
        over_quota=frozenset(QuotaClock(quotas).spent_owners(now)),
        quotas=quotas,
    )


_WAITING = (Job.id, Job.owner_id, Job.priority, Job.created_at, Job.held, Job.estimate)


def read_waiting(session: Session) -> list[Waiting]:
    """Every queued job, in submission order."""
    rows = session.execute(
        sa.select(*_WAITING).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at, Job.id)
    )
    return [Waiting(*row) for row in rows]


def in_policy_order(session: Session, settings: Settings, standing: Standing) -> list[Waiting]:
    """The eligible queued jobs, best first."""
    jobs = eligible(read_waiting(session), standing)
    return rank(jobs, standing.usage, settings.scheduler)


def first_fitting(
    session: Session,
    settings: Settings,
    *,
    free_bytes: int | None,
    other_than_owner: int | None = None,
    now: datetime | None = None,
) -> Waiting | None:
    """The job the policy ranks first among eligible queued jobs that fits ``free_bytes``
    (``placement.fits``: None fits anything), of owners other than ``other_than_owner``
    when given: what a worker with that much memory free would claim."""
    standing = read_standing(session, settings, now)
    return pick(in_policy_order(session, settings, standing), free_bytes, other_than_owner)


def pick(
    ranked: Sequence[Waiting], free_bytes: int | None, other_than_owner: int | None = None
) -> Waiting | None:
    """The first of ``ranked`` that fits ``free_bytes`` (and is not ``other_than_owner``'s)."""
    return next(
        (j for j in ranked
         if j.owner_id != other_than_owner and placement.fits(j.estimate, free_bytes)),
        None,
    )  # fmt: skip
