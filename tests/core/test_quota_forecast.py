"""Quotas in the forecast (core/jobs/quotas.py, core/jobs/play.py: play_queue): when a
spent owner's window frees enough, by the claim's own rule; a run the forecast plays that
spends the budget holds the owner's next job; a job over quota now is forecast to start when
the claim first takes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.forecast_play import ESTIMATE, Queued, cpu_worker
from core.db.tables import GpuUsage, Job, utcnow
from core.jobs.claim import ClaimingWorker, claim_next
from core.jobs.estimate import worker_fit
from core.jobs.forecast import refresh_forecast
from core.jobs.play import Policy, play_queue
from core.jobs.quotas import Quota, frees_at, used_s
from core.jobs.schedule import Standing
from core.users import set_quota
from core.workers import counted_workers
from core.workers.registry import DeviceReport, report_worker
from tests.core.sharing_rows import add_job, user_id

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
GIB = 2**30

STRETCH = st.tuples(st.floats(-2000, 0), st.floats(0, 600)).map(
    lambda s: (NOW + timedelta(seconds=s[0]), NOW + timedelta(seconds=s[0] + s[1]))
)


@given(
    stretches=st.lists(STRETCH, max_size=6),
    window_s=st.floats(10, 1500),
    budget_s=st.floats(1, 1200),
)
def test_a_window_frees_at_the_first_whole_second_under_budget(stretches, window_s, budget_s):
    start = frees_at(stretches, budget_s, window_s, NOW)
    assert start is not None  # closed stretches all slide out of the window in the end
    assert used_s(stretches, window_s, start) < budget_s
    if start > NOW:  # spent until a second before it, at every moment in between
        span = (start - SECOND - NOW).total_seconds()
        for k in range(41):
            at = NOW + timedelta(seconds=span * k / 40)
            assert used_s(stretches, window_s, at) >= budget_s, at


def test_an_open_stretch_or_a_zero_budget_never_frees_without_news():
    assert frees_at([(NOW - 10 * SECOND, None)], 5, 60, NOW) is None
    assert frees_at([(NOW - 10 * SECOND, NOW)], 0, 60, NOW) is None


def test_a_played_run_that_spends_the_quota_holds_the_owners_next_job_till_the_window_frees():
    worker = cpu_worker()
    d = worker_fit(worker, GIB, 10**12, 50, 0, 0, headroom_bytes=0).total_s
    alice, bob = 1, 2
    rows = [Queued(f"a{i}", alice, NOW + i * SECOND, ESTIMATE) for i in range(3)]
    rows.append(Queued("b0", bob, NOW + 3 * SECOND, ESTIMATE))
    standing = Standing(now=NOW, quotas={alice: Quota(budget_s=1.5 * d, window_s=10 * d)})
    out = play_queue(rows, [], [worker], now=NOW, headroom_bytes=0, paused=False,
                     policy=Policy("fifo", 600.0, standing))  # fmt: skip
    at = {job_id: (f.start - NOW).total_seconds() for job_id, f in out.items() if f.start}
    # a0 and a1 start under budget (a run is never cut by its quota); a2 finds 2d of 1.5d
    # spent: bob's job runs, then the worker waits until 0.5d of alice's 2d has left the
    # window: at 10.5d, the first whole second after.
    assert [out[r].position for r in ("a0", "a1", "b0", "a2")] == [1, 2, 3, 4]
    assert (at["a0"], at["a1"], at["b0"]) == pytest.approx((0, d, 2 * d), abs=1e-5)
    assert 10.5 * d < at["a2"] <= 10.5 * d + 1
    assert all(out[r].blocked_reason is None for r in out)  # nobody is over quota now
    paused = play_queue(rows, [], [worker], now=NOW, headroom_bytes=0, paused=True,
                        policy=Policy("fifo", 600.0, standing))  # fmt: skip
    assert (paused["a2"].start, paused["a2"].position) == (None, 4)


def test_a_job_over_quota_now_is_forecast_to_start_when_the_claim_first_takes_it(sharing_db):
    database, settings = sharing_db
    now = utcnow().replace(microsecond=0)
    with database.writing() as session:
        set_quota(session, name="alice", gpu_seconds=60, window_s=300)
        stretch = {"started_at": now - 200 * SECOND, "ended_at": now - 120 * SECOND}
        session.add(GpuUsage(user_id=user_id(session, "alice"), job_id="x" * 32, attempt=1,
                             **stretch))  # fmt: skip
        report = DeviceReport("host:cpu", "cpu", "host", "cpu", None, None, 64 * GIB, 64 * GIB,
                              None, None, None, None, 1e12, "probe")  # fmt: skip
        report_worker(session, settings, report, state="idle", current_job_id=None,
                      process="p", started_at=now)  # fmt: skip
        assert counted_workers(session, settings)
    job_id = add_job(database, "alice", queued_at=now - 100 * SECOND, estimate=ESTIMATE)
    with database.writing() as session:
        refresh_forecast(session, settings, now=now)
        job = session.get(Job, job_id)
        assert job is not None
        reason, position, start = job.blocked_reason, job.queue_position, job.estimated_start_at
    assert (reason, position) == ("quota", 1)
    assert start is not None
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start
    # 80 s of alice's stretch are inside her 300 s window now; 59 s at 121 s from now.
    assert start == now + 121 * SECOND
    worker = ClaimingWorker(worker_id="w1", key=None, name="w1", free_bytes=None)
    with database.writing() as session:
        assert claim_next(session, settings, worker, now=start - SECOND) is None
        assert claim_next(session, settings, worker, now=start) == (job_id, 1)
