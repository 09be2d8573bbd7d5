"""The queue played forward: when each queued and running job starts and ends, and each
queued job's place (``core/jobs/forecast.py`` stores what this plays; docs/scheduling.md,
"Positions and forecasts").

The scheduling policy (``core/jobs/schedule.py``) is played over the counted workers as
their claims would play it: the worker free soonest (now, or when its running job ends)
takes the eligible job the policy ranks first among those it holds, for its estimated time
there (``core.jobs.estimate.worker_fit``). The owner's usage grows by that run, decayed as
``core/jobs/usage.py`` decays it, so the owner's next job ranks as it will then, and so does
the owner's quota window (``core/jobs/quotas.py``): a spent owner's jobs wait until it
frees. The order of starts is the queue position.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from core.jobs.estimate import worker_fit
from core.jobs.quotas import QuotaClock
from core.jobs.schedule import (
    PAUSED,
    QUOTA,
    Scheduler,
    Standing,
    blocked_reason,
    order_key,
    tier,
)
from core.jobs.usage import decayed_seconds
from core.workers import WorkerInfo

NO_FITTING_WORKER = "no_fitting_worker"


@dataclass
class _Lane:
    worker: WorkerInfo
    free_at: datetime | None  # None: busy for an unknown time


@dataclass(frozen=True)
class Forecast:
    start: datetime | None
    finish: datetime | None
    blocked_reason: str | None = None
    position: int | None = None  # 1-based place in the start order; queued jobs only


@dataclass(frozen=True)
class Policy:
    """The policy the queue is played with (``core/jobs/schedule.py``) and its inputs now."""

    scheduler: Scheduler
    half_life_s: float
    standing: Standing


def _running_end(job: Any, now: datetime) -> datetime | None:
    eta = (job.progress or {}).get("eta_s")
    if eta is not None:
        return now + timedelta(seconds=float(eta))
    total = (job.estimate or {}).get("total_s")
    if total is not None and job.started_at is not None:
        return max(now, job.started_at + timedelta(seconds=float(total)))
    return None


class _Shares:
    """Each owner's decayed usage as the played clock moves forward: what was used by ``now``
    fades by ``2 ** (-dt / half_life)`` and each run played adds its seconds, weighed as
    ``core/jobs/usage.py: decayed_seconds`` weighs them, so the ranking at a played time is
    the one a claim would make then."""

    def __init__(self, policy: Policy | None, now: datetime) -> None:
        self.counted = policy is not None
        self.half_life_s = policy.half_life_s if policy else 1.0
        self.usage = dict(policy.standing.usage) if policy else {}
        self.clock = now
        self.runs: list[tuple[int, datetime, datetime | None]] = []  # (owner, start, end)

    def add(self, job: Any, start: datetime, end: datetime | None) -> None:
        if self.counted:
            self.runs.append((job.owner_id, start, end))

    def at(self, t: datetime) -> dict[int, float]:
        if t > self.clock:
            factor = 2 ** (-(t - self.clock).total_seconds() / self.half_life_s)
            self.usage = {owner: used * factor for owner, used in self.usage.items()}
            for owner, start, end in self.runs:
                a, b = max(start, self.clock), min(end or t, t)
                if b > a:
                    added = decayed_seconds(a, b, t, self.half_life_s)
                    self.usage[owner] = self.usage.get(owner, 0.0) + added
            self.runs = [run for run in self.runs if run[2] is None or run[2] > t]
            self.clock = t
        return self.usage


class _Line:
    """The jobs still to place. A user's jobs of one tier keep their order, so the policy's
    order is a merge of per-(tier, owner) lines by each head's key: no re-sort per pick."""

    def __init__(self, policy: Policy | None) -> None:
        self.policy = policy
        self.groups: dict[tuple[int, int], deque[Any]] = {}

    def add(self, job: Any) -> None:
        key = (tier(job.priority), job.owner_id) if self.policy else (0, 0)
        self.groups.setdefault(key, deque()).append(job)

    def __bool__(self) -> bool:
        return any(self.groups.values())

    def walk(self, usage: dict[int, float], passed_over: Set[int] = frozenset()) -> Iterator[Any]:
        """The jobs in the policy's order, without those of the ``passed_over`` owners."""
        policy = self.policy
        if policy is None:
            return iter(self.groups.get((0, 0), ()))
        lines = (jobs for (_, owner), jobs in self.groups.items() if owner not in passed_over)
        return heapq.merge(*lines, key=lambda j: order_key(j, usage, policy.scheduler))

    def of_owner(self, owner: int) -> Iterator[Any]:
        return (job for (_, o), jobs in self.groups.items() if o == owner for job in jobs)

    def remove(self, job: Any) -> None:
        key = (tier(job.priority), job.owner_id) if self.policy else (0, 0)
        self.groups[key].remove(job)


def _fit(lane: _Lane, job: Any, headroom_bytes: int) -> tuple[bool, float | None]:
    """Whether the lane's worker holds the job, and its seconds there (None: no estimate)."""
    estimate = job.estimate
    if not estimate or "workload" not in estimate:  # submitted before estimates
        return True, None
    work = estimate["workload"]
    fit = worker_fit(
        lane.worker, estimate["peak_vram_bytes"], estimate["step_flops"],
        work["steps"], work["samples"], work["saves"], headroom_bytes=headroom_bytes,
        cached_images=work.get("cached_images", 0),
    )  # fmt: skip
    return fit.fits, fit.total_s


def play_queue(
    queued: Sequence[Any],
    running: Sequence[Any],
    workers: Sequence[WorkerInfo],
    *,
    now: datetime,
    headroom_bytes: int,
    paused: bool,
    policy: Policy | None = None,
) -> dict[str, Forecast]:
    """The forecast of each job (rows with ``id``, ``estimate``, ``progress``, ``started_at``;
    with a ``policy`` also ``owner_id``, ``priority``, ``created_at``, ``held``). Without a
    policy ``queued`` is played in the order given.

    The worker free soonest takes the first job in policy order that it holds, as its claim
    would; a worker that holds none of the jobs left idles from then on."""
    out: dict[str, Forecast] = {}
    ends = {job.id: _running_end(job, now) for job in running}
    for job in running:
        out[job.id] = Forecast(job.started_at, ends[job.id])
    lanes = [_Lane(w, ends.get(w.current_job_id) if w.current_job_id else now) for w in workers]
    shares = _Shares(policy, now)
    quotas = QuotaClock(policy.standing.quotas if policy else {})
    for job in running:
        shares.add(job, now, ends[job.id])
        if quotas:
            quotas.add(job.owner_id, now, ends[job.id])
    line = _Line(policy)
    standing = replace(policy.standing, paused=False) if policy else None
    over_quota = set()  # played too: they start when their owner's window frees enough
    for job in queued:
        reason = blocked_reason(job, standing) if standing else None
        held_nowhere = lanes and not any(_fit(lane, job, headroom_bytes)[0] for lane in lanes)
        if reason is None and held_nowhere:
            reason = NO_FITTING_WORKER
        if reason == QUOTA and not held_nowhere:
            over_quota.add(job.id)
            line.add(job)
        elif reason is not None:
            out[job.id] = Forecast(None, None, reason)
        else:
            line.add(job)
    _play(line, lanes, (shares, quotas), out, now=now, headroom_bytes=headroom_bytes)
    for job_id in over_quota:  # why it waits now, whenever it is played to start
        out[job_id] = replace(out[job_id], blocked_reason=QUOTA)
    if paused:  # the order stands, the times don't: nothing starts until an admin resumes
        for job in queued:
            f = out[job.id]
            if f.blocked_reason in (None, NO_FITTING_WORKER, QUOTA):
                reason = QUOTA if f.blocked_reason == QUOTA else PAUSED
                out[job.id] = Forecast(None, None, reason, f.position)
    return out


def _play(
    line: _Line,
    lanes: list[_Lane],
    clocks: tuple[_Shares, QuotaClock],
    out: dict[str, Forecast],
    *,
    now: datetime,
    headroom_bytes: int,
) -> None:
    shares, quotas = clocks
    live = list(lanes)  # workers that may still take a job
    position = 0
    while line:
        lane = min((x for x in live if x.free_at is not None), key=_free_at, default=None)
        at = max(lane.free_at or now, now) if lane else now
        job, waiting = _first_to_start(line, shares.at(at), lane, quotas, at, headroom_bytes)
        if job is None:  # what this worker holds waits for quota, or there is nothing left
            assert lane is not None
            resume = min(filter(None, (quotas.frees_at(o, at) for o in waiting)), default=None)
            if resume is None:  # nothing it will ever hold: it idles from here on
                live.remove(lane)
            else:
                lane.free_at = resume
            continue
        line.remove(job)
        position += 1
        seconds = _fit(lane, job, headroom_bytes)[1] if lane else None
        if lane is None or seconds is None:  # no worker free at a known time, or no estimate
            out[job.id] = Forecast(None, None, None, position)
            if lane is not None:
                lane.free_at = None
                _add_run(clocks, job, at, None)
            continue
        finish = at + timedelta(seconds=seconds)
        lane.free_at = finish
        _add_run(clocks, job, at, finish)
        out[job.id] = Forecast(at, finish, None, position)


def _first_to_start(
    line: _Line,
    usage: dict[int, float],
    lane: _Lane | None,
    quotas: QuotaClock,
    at: datetime,
    headroom: int,
) -> tuple[Any | None, set[int]]:
    """The first job in the policy's order that the lane's worker holds, of an owner whose
    quota is not spent at ``at`` (with no lane, the first job); when there is none, the
    spent owners that have a job the worker holds (it waits for the first to free)."""
    if lane is None:
        return next(line.walk(usage), None), set()
    spent = quotas.spent_owners(at)
    holds = (j for j in line.walk(usage, passed_over=spent) if _fit(lane, j, headroom)[0])
    if (job := next(holds, None)) is not None:
        return job, set()
    return None, {o for o in spent if any(_fit(lane, j, headroom)[0] for j in line.of_owner(o))}


def _add_run(
    clocks: tuple[_Shares, QuotaClock], job: Any, start: datetime, end: datetime | None
) -> None:
    shares, quotas = clocks
    shares.add(job, start, end)
    if quotas:
        quotas.add(job.owner_id, start, end)


def _free_at(lane: _Lane) -> datetime:
    assert lane.free_at is not None
    return lane.free_at
