"""When the reconciler asks a running job to make room (core/jobs/preemption.py), on a real
migrated SQLite file with rows as workers leave them: only for a waiting job of another user
the policy ranks ahead, both past LORABOX_PREEMPT_AFTER_S, preempt_max honoured, one at a
time, never for the owner's own next job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.db import Job, JobEvent
from core.db.tables import GpuUsage
from core.jobs.preemption import (
    REQUESTED_EVENT,
    Running,
    choose,
    preempt_if_due,
    record_preemption,
)
from core.jobs.schedule import Waiting
from core.settings import Settings
from tests.core.sharing_rows import add_job as _job
from tests.core.sharing_rows import user_id as _user

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def _pass(db, settings, now: datetime) -> str | None:
    with db.writing() as session:
        return preempt_if_due(session, settings, now)


def test_a_waiting_job_of_another_user_preempts_only_past_both_waits(sharing_db):
    database, settings = sharing_db
    running = _job(database, "alice", queued_at=T0, running_since=T0)
    waiting = _job(database, "bob", queued_at=T0 + timedelta(seconds=30))
    assert _pass(database, settings, T0 + timedelta(seconds=80)) is None  # bob waited 50 s
    assert _pass(database, settings, T0 + timedelta(seconds=91)) == running
    with database.reading() as session:
        assert session.get(Job, running).preempt_requested
        event = session.query(JobEvent).filter_by(job_id=running, kind=REQUESTED_EVENT).one()
        assert event.data["for_job"] == waiting and event.data["waited_s"] == 61
    # One at a time: nothing more while this request is under way.
    _job(database, "bob", queued_at=T0)
    assert _pass(database, settings, T0 + timedelta(seconds=200)) is None


def test_the_owner_s_own_next_job_a_held_one_or_a_higher_tier_never_preempts(sharing_db):
    database, settings = sharing_db
    _job(database, "alice", queued_at=T0, running_since=T0)
    _job(database, "alice", queued_at=T0)  # alice's next: no reason to suspend alice
    now = T0 + timedelta(seconds=120)
    assert _pass(database, settings, now) is None
    later = _job(database, "bob", queued_at=T0 + timedelta(seconds=1), held=True)
    assert _pass(database, settings, now) is None  # held: not eligible
    with database.writing() as session:
        session.get(Job, later).held = False
        session.get(Job, later).priority = "low"  # a lower tier than the running job's
    assert _pass(database, settings, now) is None
    with database.writing() as session:
        session.get(Job, later).priority = "normal"
    assert _pass(database, settings, now) is not None  # the same job, now due


def test_the_policy_s_ranking_decides_so_two_users_don_t_bounce(sharing_db):
    database, settings = sharing_db
    # bob's job ran 100 s and was preempted for alice's, which has now run 70 s: alice used
    # less, so she still ranks first and bob's waiting job is no reason to suspend her.
    bob_job = _job(database, "bob", queued_at=T0)
    with database.writing() as session:
        session.add(GpuUsage(user_id=_user(session, "bob"), job_id=bob_job, attempt=1,
                             started_at=T0, ended_at=T0 + timedelta(seconds=100)))  # fmt: skip
    alice_job = _job(database, "alice", queued_at=T0 + timedelta(seconds=1),
                     running_since=T0 + timedelta(seconds=100))  # fmt: skip
    assert _pass(database, settings, T0 + timedelta(seconds=170)) is None
    # Once alice used more than bob, the ranking turns: bob's job is due (and has waited).
    assert _pass(database, settings, T0 + timedelta(seconds=205)) == alice_job
    # Under fifo, the earlier submission (bob's) ranks first at once.
    with database.writing() as session:
        session.get(Job, alice_job).preempt_requested = False
    fifo = settings.model_copy(update={"scheduler": "fifo"})
    assert _pass(database, fifo, T0 + timedelta(seconds=170)) == alice_job


def test_preempt_max_ends_it_and_record_preemption_counts_and_clears(sharing_db):
    database, settings = sharing_db
    running = _job(database, "alice", queued_at=T0, running_since=T0)
    _job(database, "bob", queued_at=T0)
    now = T0 + timedelta(seconds=120)
    assert _pass(database, settings, now) == running
    with database.writing() as session:
        assert record_preemption(session, job_id=running, attempt=1, step=7)
        assert not record_preemption(session, job_id=running, attempt=2, step=7)  # fenced
        job = session.get(Job, running)
        assert (job.preemptions, job.preempt_requested) == (1, False)
        job.preemptions = settings.preempt_max
    assert _pass(database, settings, now) is None
    off = settings.model_copy(update={"preempt_after_s": None})
    with database.writing() as session:
        session.get(Job, running).preemptions = 0
    assert _pass(database, off, now) is None  # off by default


def _waiting(job_id: str, owner: int, gib: int) -> Waiting:
    estimate = {"peak_vram_bytes": gib * 2**30}
    return Waiting(job_id, owner, "normal", T0, False, estimate)


def test_only_the_job_the_freed_worker_would_claim_counts_and_only_if_due():
    victim = Running("r", 1, "normal", T0, False, 1, T0, {"peak_vram_bytes": 10 * 2**30})
    usage = {1: 500.0}  # the victim's owner used the most: others rank ahead
    settings = Settings(preempt_after_s=60)
    big, small = _waiting("big", 2, 30), _waiting("small", 3, 8)
    on_16_gib = {"r": 16 * 2**30}

    def chosen(ranked, due, capacity=on_16_gib):
        pick = choose([victim], ranked, due=due, usage=usage, settings=settings,
                      capacity=capacity)  # fmt: skip
        return pick[1].id if pick else None

    assert chosen([big, small], {"big", "small"}) == "small"  # big never fits that worker
    assert chosen([big, small], {"big", "small"}, {"r": None}) == "big"  # unknown: fits all
    assert chosen([small, big], {"big"}) is None  # small would take it, and is not due yet
    own = _waiting("own", 1, 1)
    assert chosen([own, small], {"own", "small"}) is None  # the owner's own job is next
