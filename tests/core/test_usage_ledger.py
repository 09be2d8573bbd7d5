"""The GPU-usage ledger (core/jobs/usage.py): the decay's closed form against a numeric
integral, the rolling window, and rows opened at a claim and closed at an attempt's end
(on SQLite and Postgres)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.db import Database, Job
from core.db.migrate import upgrade
from core.db.tables import GpuUsage, User
from core.jobs.usage import (
    close_usage,
    decayed_seconds,
    decayed_usage,
    open_usage,
    window_seconds,
    window_usage,
)
from tests.conftest import fresh_postgres_database

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
H = 3600.0


def _ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_the_decayed_weight_is_the_integral_of_two_to_the_minus_age_over_the_half_life():
    start, end = _ago(5000), _ago(1000)
    steps = 20_000
    width = 4000 / steps
    numeric = sum(2 ** (-(1000 + (i + 0.5) * width) / H) * width for i in range(steps))
    assert decayed_seconds(start, end, NOW, H) == pytest.approx(numeric, rel=1e-6)
    # A second just used weighs one second; one a half-life ago half of that.
    assert decayed_seconds(_ago(1), NOW, NOW, H) == pytest.approx(1.0, rel=1e-3)
    assert decayed_seconds(_ago(H + 1), _ago(H), NOW, H) == pytest.approx(0.5, rel=1e-3)
    # A long run approaches half_life / ln 2 and never passes it.
    assert decayed_seconds(_ago(100 * H), NOW, NOW, H) == pytest.approx(H / math.log(2))
    assert decayed_seconds(NOW, NOW + timedelta(hours=1), NOW, H) == 0.0  # the future: nothing


def test_the_window_counts_undecayed_seconds_inside_it_only():
    assert window_seconds(_ago(500), _ago(100), NOW, 1000) == 400
    assert window_seconds(_ago(1500), _ago(100), NOW, 1000) == 900  # clipped at the window
    assert window_seconds(_ago(3000), _ago(2000), NOW, 1000) == 0


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'u.db'}"
        upgrade(url)
        database = Database(url, pool_size=1)
        yield database
        database.dispose()
        return
    with fresh_postgres_database() as url:
        upgrade(url)
        database = Database(url, pool_size=1)
        yield database
        database.dispose()


def _user_and_job(session: sa.orm.Session, name: str) -> tuple[int, str]:
    user = User(name=name)
    session.add(user)
    session.flush()
    job = Job(owner_id=user.id, base_model="m", dataset_id="d", params={}, config={},
              resolved={}, plan={})  # fmt: skip
    session.add(job)
    session.flush()
    return user.id, job.id


def test_rows_open_at_a_claim_count_live_and_close_once(db: Database):
    with db.writing() as session:
        ann, ann_job = _user_and_job(session, "ann")
        bob, bob_job = _user_and_job(session, "bob")
        open_usage(session, user_id=ann, job_id=ann_job, attempt=1, worker_key="k", now=_ago(600))
        open_usage(session, user_id=bob, job_id=bob_job, attempt=1, worker_key="k", now=_ago(300))
    with db.writing() as session:
        assert close_usage(session, job_id=ann_job, attempt=1, now=_ago(200)) == 1
        assert close_usage(session, job_id=ann_job, attempt=1, now=NOW) == 0  # closed already
    with db.reading() as session:
        decayed = decayed_usage(session, half_life_s=H, now=NOW)
        window = window_usage(session, user_ids=[ann, bob], window_s=500, now=NOW)
        rows = session.execute(sa.select(GpuUsage.job_id, GpuUsage.ended_at)).all()
    assert decayed[ann] == pytest.approx(decayed_seconds(_ago(600), _ago(200), NOW, H))
    assert decayed[bob] == pytest.approx(decayed_seconds(_ago(300), NOW, NOW, H))  # still open
    assert window == {ann: pytest.approx(300), bob: pytest.approx(300)}
    assert dict(rows)[ann_job] == _ago(200)
    # A lease reclaimed closes every open row of the job, whatever its attempt.
    with db.writing() as session:
        assert close_usage(session, job_id=bob_job, now=NOW) == 1
    with db.reading() as session:
        later = decayed_usage(session, half_life_s=H, now=NOW + timedelta(hours=1))
    assert later[bob] == pytest.approx(decayed_seconds(_ago(300), NOW, NOW, H) / 2)
