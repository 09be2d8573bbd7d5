"""Preemption by exact resume (docs/scheduling.md, "Preemption"; off unless
``LORABOX_PREEMPT_AFTER_S`` is set).

Each reconciler pass asks :func:`preempt_if_due`: is a waiting job of another user ranked
by the policy ahead of a running job, would it fit that job's worker once freed, has it
waited longer than ``preempt_after_s``, and has the running job run (this attempt) longer
than that, fewer than ``preempt_max`` times preempted? Then the running job gets
``preempt_requested``; its supervisor asks the trainer to *suspend* (the graceful-stop
path, docs/reliability.md: at most one more optimizer step, then an exact training state),
and :func:`record_preemption` puts it back in line with its submission time kept.

What keeps two users' jobs from bouncing: every preemption needs the policy's ranking
(``core/jobs/schedule.py: order_key``), and a preempted job's own run counted in its owner's
usage, so the job that took its place ranks behind it only once it has used as much; both
waits (``preempt_after_s`` in line, the same running) start over at each attempt; and
``preempt_max`` ends it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.tables import GpuUsage, Job, JobEvent, JobStatus, utcnow
from core.jobs.claim import queue_lock
from core.jobs.events import record_event
from core.jobs.schedule import Waiting, in_policy_order, order_key, read_standing
from core.settings import Settings
from core.workers import WorkerInfo, all_workers, placement

REQUESTED_EVENT = "preempt_requested"
PREEMPTED_EVENT = "preempted"


@dataclass(frozen=True)
class Running:
    """A running job as preemption reads it (the policy's fields, and its attempt's start)."""

    id: str
    owner_id: int
    priority: str
    created_at: datetime
    held: bool
    attempt: int
    started_at: datetime
    estimate: Mapping[str, Any] | None


def _running(session: Session, settings: Settings, now: datetime) -> list[Running]:
    """Running jobs that may be preempted now: this attempt ran past ``preempt_after_s``,
    preempted fewer than ``preempt_max`` times, nobody asked them to stop or end."""
    assert settings.preempt_after_s is not None
    ran_since = now - timedelta(seconds=settings.preempt_after_s)
    rows = session.execute(
        sa.select(
            Job.id,
            Job.owner_id,
            Job.priority,
            Job.created_at,
            Job.held,
            Job.attempt,
            Job.started_at,
            Job.estimate,
        ).where(  # fmt: skip
            Job.status == JobStatus.RUNNING,
            Job.started_at <= ran_since,
            Job.preemptions < settings.preempt_max,
            ~Job.preempt_requested,
            ~Job.cancel_requested,
            ~Job.stop_requested,
        )
    )
    return [Running(*row) for row in rows]


def _queued_since(session: Session, jobs: Sequence[Waiting]) -> dict[str, datetime]:
    """When each job last joined the queue: its submission, or its last attempt's end."""
    ends = dict(
        session.execute(
            sa.select(GpuUsage.job_id, sa.func.max(GpuUsage.ended_at))
            .where(GpuUsage.job_id.in_([j.id for j in jobs]))
            .group_by(GpuUsage.job_id)
        ).all()
    )
    return {j.id: max(j.created_at, ends.get(j.id) or j.created_at) for j in jobs}


def _capacity(worker: WorkerInfo | None, running: Running) -> int | None:
    """The worker's free memory once the running job is gone (None: unknown, fits all)."""
    if worker is None:
        return None
    freed = placement.needed_bytes(running.estimate)
    if freed is None:
        return worker.total_memory_bytes
    return min(worker.total_memory_bytes, worker.free_memory_bytes + freed)


def choose(
    running: Sequence[Running],
    ranked: Sequence[Waiting],
    *,
    due: Set[str],
    usage: Mapping[int, float],
    settings: Settings,
    capacity: Mapping[str, int | None],
) -> tuple[Running, Waiting] | None:
    """The running job to suspend and the waiting job it makes room for, or None.

    ``ranked``: the eligible queued jobs in policy order; ``due``: those that waited long
    enough. The victim is the running job the policy ranks last; the waiting job is the
    first of ``ranked`` that fits its worker (the one that worker would claim once freed),
    and only if it is due, another user's, and ranked ahead of the victim."""
    for victim in sorted(running, key=lambda r: order_key(r, usage, settings.scheduler),
                         reverse=True):  # fmt: skip
        waiting = next(
            (w for w in ranked if placement.fits(w.estimate, capacity.get(victim.id))), None
        )
        if (
            waiting is not None
            and waiting.id in due
            and waiting.owner_id != victim.owner_id  # the owner's own next job is no reason
            and order_key(waiting, usage, settings.scheduler)
            < order_key(victim, usage, settings.scheduler)
        ):
            return victim, waiting
    return None


def preempt_if_due(session: Session, settings: Settings, now: datetime | None = None) -> str | None:
    """One reconciler pass's preemption: sets ``preempt_requested`` on at most one running
    job (none while another preemption is under way) and records why; returns its id."""
    if settings.preempt_after_s is None:
        return None
    now = now or utcnow()
    queue_lock(session)  # Postgres: one reconciler decides at a time (one request at a time)
    _forget_stale_requests(session)
    if session.scalar(sa.select(sa.func.count()).where(Job.preempt_requested)):
        return None  # one at a time: the job it makes room for must start first
    running = _running(session, settings, now)
    if not running:
        return None
    standing = read_standing(session, settings, now)
    ranked = in_policy_order(session, settings, standing)
    since = _queued_since(session, ranked)
    waited = now - timedelta(seconds=settings.preempt_after_s)
    due = {job_id for job_id, joined in since.items() if joined <= waited}
    workers = {w.current_job_id: w for w in all_workers(session) if w.current_job_id}
    capacity = {r.id: _capacity(workers.get(r.id), r) for r in running}
    chosen = choose(running, ranked, due=due, usage=standing.usage, settings=settings,
                    capacity=capacity)  # fmt: skip
    if chosen is None:
        return None
    victim, waiting = chosen
    return victim.id if _request(session, victim, waiting, now, since[waiting.id]) else None


def _request(
    session: Session, victim: Running, waiting: Waiting, now: datetime, since: datetime
) -> bool:
    done = session.execute(
        sa.update(Job)
        .where(
            Job.id == victim.id,
            Job.attempt == victim.attempt,
            Job.status == JobStatus.RUNNING,
            ~Job.preempt_requested,
        )  # fmt: skip
        .values(preempt_requested=True)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    data = {
        "for_job": waiting.id,
        "ran_s": round((now - victim.started_at).total_seconds(), 3),
        "waited_s": round((now - since).total_seconds(), 3),
    }
    record_event(session, victim.id, REQUESTED_EVENT, data, attempt=victim.attempt)
    return True


def _forget_stale_requests(session: Session) -> None:
    """A request whose run ended another way (finished, lost, shut down) is void."""
    session.execute(
        sa.update(Job)
        .where(Job.preempt_requested, Job.status != JobStatus.RUNNING)
        .values(preempt_requested=False)
        .execution_options(synchronize_session=False)
    )


def requested_for(session: Session, job_id: str, attempt: int) -> bool:
    """Whether ``preempt_requested`` is set for this attempt (not a void one left by an
    earlier attempt the reconciler has not cleared yet)."""
    flagged = session.scalar(sa.select(Job.preempt_requested).where(Job.id == job_id))
    if not flagged:
        return False
    last = session.scalar(
        sa.select(JobEvent.attempt)
        .where(JobEvent.job_id == job_id, JobEvent.kind == REQUESTED_EVENT)
        .order_by(JobEvent.id.desc())
        .limit(1)
    )
    return last == attempt


def record_preemption(session: Session, *, job_id: str, attempt: int, step: int | None) -> bool:
    """The suspended attempt's bookkeeping, in the transaction that hands it back
    (``worker/runner.py: _record_end``): one more preemption, the request cleared, a
    ``preempted`` event. False when the attempt no longer owns it."""
    done = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)
        .values(preemptions=Job.preemptions + 1, preempt_requested=False)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    record_event(session, job_id, PREEMPTED_EVENT, {"step": step}, attempt=attempt)
    return True
