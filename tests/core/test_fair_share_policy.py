"""The scheduling policy end to end at the core: the real claim (core/jobs/claim.py), the
stored positions (core/jobs/forecast.py: refresh_forecast) and the usage ledger, driven by a
simulated clock and one simulated worker, against a small reference model written here.

Random submissions (three users, three tiers), holds, releases and cancels; every job lasts
the same known time. The observed start order must equal the model's, and at every start
the positions stored after the last queue change must equal the order the jobs then start
in, as the model plays it forward."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.db import Database, Job
from core.db.tables import Base, JobStatus, User, utcnow
from core.jobs.claim import ClaimingWorker, claim_next
from core.jobs.estimate import worker_fit
from core.jobs.forecast import refresh_forecast
from core.jobs.usage import close_usage
from core.settings import Settings
from core.workers import counted_workers
from core.workers.registry import DeviceReport, report_worker, set_activity

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HALF_LIFE = 600.0
USERS = ("ann", "bob", "cid")
TIERS = ("high", "normal", "low")
KEY = "host:cpu"


# --- the reference model -----------------------------------------------------------------


@dataclass
class Model:
    scheduler: str
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[tuple[int, datetime, datetime]] = field(default_factory=list)

    def usage(self, owner: int, at: datetime) -> float:
        total = 0.0
        for who, start, end in self.runs:
            if who != owner or start >= at:
                continue
            a, b = (at - start).total_seconds(), (at - min(end, at)).total_seconds()
            total += HALF_LIFE / math.log(2) * (2 ** (-b / HALF_LIFE) - 2 ** (-a / HALF_LIFE))
        return total

    def order(self, at: datetime, duration: float) -> list[str]:
        """The queued, unheld jobs in the order one worker starts them from ``at`` on, with
        nothing else changing."""
        waiting = [j for j, v in self.jobs.items() if v["status"] == "queued" and not v["held"]]
        saved, out, t = list(self.runs), [], at
        while waiting:

            def key(j: str, t: datetime = t) -> tuple[Any, ...]:
                v = self.jobs[j]
                share = round(self.usage(v["owner"], t), 3) if self.scheduler == "fair" else 0
                return (TIERS.index(v["priority"]), share, v["created"], j)

            first = min(waiting, key=key)
            waiting.remove(first)
            out.append(first)
            end = t + timedelta(seconds=duration)
            self.runs.append((self.jobs[first]["owner"], t, end))
            t = end
        self.runs = saved
        return out


# --- the system under test -----------------------------------------------------------------


class Sim:
    def __init__(self, home: Path, scheduler: str) -> None:
        self.settings = Settings(home=home, scheduler=scheduler, fairshare_half_life_s=HALF_LIFE)
        self.settings.ensure_dirs()
        self.db = Database(self.settings.database_url, pool_size=1)
        Base.metadata.create_all(self.db.engine)
        with self.db.writing() as session:
            self.owners = {}
            for name in USERS:
                user = User(name=name)
                session.add(user)
                session.flush()
                self.owners[name] = user.id
            report = DeviceReport(KEY, "cpu", "host", "cpu", None, None, 64 * 2**30,
                                  64 * 2**30, None, None, None, None, 1e12, "probe")  # fmt: skip
            report_worker(session, self.settings, report, state="idle", current_job_id=None,
                          process="p", started_at=utcnow())  # fmt: skip
            (info,) = counted_workers(session, self.settings)
        self.duration = worker_fit(info, 2**30, 10**12, 50, 0, 0, headroom_bytes=0).total_s
        self.estimate = {"peak_vram_bytes": 2**30, "step_flops": 10**12, "total_s": self.duration,
                         "workload": {"steps": 50, "samples": 0, "saves": 0}}  # fmt: skip
        self.running: tuple[str, int, datetime] | None = None
        self.started: list[str] = []

    def submit(self, owner: int, priority: str, at: datetime) -> str:
        with self.db.writing() as session:
            job = Job(owner_id=owner, base_model="m", dataset_id="d", params={}, config={},
                      resolved={}, plan={}, estimate=self.estimate, priority=priority,
                      created_at=at)  # fmt: skip
            session.add(job)
            session.flush()
            return job.id

    def set(self, job_id: str, **values: Any) -> None:
        with self.db.writing() as session:
            session.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                .values(**values)
            )

    def refresh(self, at: datetime) -> None:
        with self.db.writing() as session:
            refresh_forecast(session, self.settings, now=at)

    def positions(self) -> list[str]:
        with self.db.reading() as session:
            rows = session.execute(
                sa.select(Job.id, Job.queue_position).where(
                    Job.status == JobStatus.QUEUED, Job.queue_position.is_not(None)
                )
            ).all()
        ordered = sorted(rows, key=lambda r: r.queue_position)
        assert [r.queue_position for r in ordered] == list(range(1, len(rows) + 1))
        return [r.id for r in ordered]

    def claim(self, at: datetime) -> str | None:
        worker = ClaimingWorker("w", KEY, "cpu", None)
        with self.db.writing() as session:
            claimed = claim_next(session, self.settings, worker, now=at)
            if claimed is not None:
                set_activity(session, KEY, state="busy", current_job_id=claimed[0])
        if claimed is None:
            return None
        self.running = (claimed[0], claimed[1], at)
        self.started.append(claimed[0])
        return claimed[0]

    def finish(self, at: datetime) -> None:
        assert self.running is not None
        job_id, attempt, _ = self.running
        with self.db.writing() as session:
            session.execute(sa.update(Job).where(Job.id == job_id)
                            .values(status=JobStatus.SUCCEEDED, finished_at=at))  # fmt: skip
            close_usage(session, job_id=job_id, attempt=attempt, now=at)
            set_activity(session, KEY, state="idle", current_job_id=None)
        self.running = None


# --- the driver ----------------------------------------------------------------------------

ACTION = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(USERS), st.sampled_from(TIERS)),
    st.tuples(st.just("hold"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 30), st.just(None)),
    st.tuples(st.just("wait"), st.sampled_from((0.0, 0.3, 0.5, 1.0, 2.5)), st.just(None)),
)


def _play(home: Path, scheduler: str, actions: list[tuple[str, Any, Any]]) -> None:
    sim, model = Sim(home, scheduler), Model(scheduler)
    t = T0

    def start_if_idle() -> None:
        if sim.running is not None:
            return
        expected = model.order(t, sim.duration)
        stored = sim.positions()  # as the refresh after the last change left them
        started = sim.claim(t)
        assert started == (expected[0] if expected else None)
        assert stored == expected, "the stored positions are not the order jobs start in"
        if started is not None:
            model.jobs[started]["status"] = "running"
            model.runs.append((model.jobs[started]["owner"], t,
                               t + timedelta(seconds=sim.duration)))  # fmt: skip
            sim.refresh(t)

    def advance(seconds: float) -> None:
        nonlocal t
        target = t + timedelta(seconds=seconds)
        while (
            sim.running is not None and sim.running[2] + timedelta(seconds=sim.duration) <= target
        ):
            t = sim.running[2] + timedelta(seconds=sim.duration)
            model.jobs[sim.running[0]]["status"] = "done"
            sim.finish(t)
            sim.refresh(t)
            start_if_idle()
        t = target

    for kind, a, b in actions:
        ids = list(model.jobs)
        if kind == "submit":
            t += timedelta(milliseconds=1)  # distinct submission times, as a real clock gives
            job_id = sim.submit(sim.owners[a], b, t)
            model.jobs[job_id] = {"owner": sim.owners[a], "priority": b, "created": t,
                                  "held": False, "status": "queued"}  # fmt: skip
        elif kind in ("hold", "cancel") and ids:
            job_id = ids[a % len(ids)]
            if model.jobs[job_id]["status"] != "queued":
                continue
            if kind == "hold":
                sim.set(job_id, held=b)
                model.jobs[job_id]["held"] = b
            else:
                sim.set(job_id, status=JobStatus.CANCELLED)
                model.jobs[job_id]["status"] = "cancelled"
        elif kind == "wait":
            advance(a * sim.duration)
            continue
        else:
            continue
        sim.refresh(t)
        start_if_idle()
    advance(len(model.jobs) * sim.duration + 1)
    sim.db.dispose()


@pytest.mark.parametrize("scheduler", ["fair", "fifo"])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(actions=st.lists(ACTION, min_size=1, max_size=30))
def test_starts_and_stored_positions_follow_the_reference_model(
    tmp_path_factory: pytest.TempPathFactory, scheduler: str, actions: list[Any]
) -> None:
    _play(tmp_path_factory.mktemp("policy"), scheduler, actions)


def test_a_light_user_s_job_goes_before_a_heavy_user_s_backlog_and_fifo_keeps_order(tmp_path):
    """The issue's example at the core: A queues five, then B one; one worker."""
    for scheduler, b_place in (("fair", 2), ("fifo", 6)):
        sim = Sim(tmp_path / scheduler, scheduler)
        a, b = sim.owners["ann"], sim.owners["bob"]
        jobs = [sim.submit(a, "normal", T0 + timedelta(seconds=i)) for i in range(5)]
        late = sim.submit(b, "normal", T0 + timedelta(seconds=5))
        t = T0 + timedelta(seconds=6)
        while sim.claim(t) is not None:
            t += timedelta(seconds=sim.duration)
            sim.finish(t)
        assert sim.started.index(late) + 1 == b_place, scheduler
        assert [j for j in sim.started if j != late] == jobs  # A's keep their order
        sim.db.dispose()
