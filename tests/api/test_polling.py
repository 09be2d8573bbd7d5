"""The status-polling read (GET /v1/jobs/{id}): the queue positions the forecast stored (here
one user's jobs of one tier: submission order, ties on created_at broken by id) on SQLite and
Postgres, read by primary key with nothing counted per poll."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from api.views import _POLL, fetch_job_read, one_job
from core.db import Database, Job, User
from core.db.migrate import upgrade
from core.db.tables import JobStatus
from core.jobs.forecast import refresh_forecast
from core.jobs.queue import queued_ids_in_order
from core.settings import Settings
from tests.conftest import fresh_postgres_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PLAN = {"total_steps": 10, "batches_per_epoch": 10, "epochs": 1, "warmup_steps": 0,
        "images_x_repeats": 10, "buckets": [], "warnings": []}  # fmt: skip
# (id, status, seconds after T0): three queued jobs share one instant, so their ids decide.
JOBS = [
    ("c" * 32, JobStatus.QUEUED, 0),
    ("a" * 32, JobStatus.RUNNING, 0),
    ("e" * 32, JobStatus.QUEUED, 1),
    ("d" * 32, JobStatus.QUEUED, 1),
    ("b" * 32, JobStatus.FAILED, 1),
    ("f" * 32, JobStatus.QUEUED, 1),
    ("0" * 32, JobStatus.QUEUED, 2),
]


def _seed(url: str) -> Database:
    upgrade(url)
    db = Database(url, pool_size=2)
    with db.writing() as session:
        session.add(User(id=1, name="alice", token_digest="x" * 64))
        session.flush()
        for job_id, status, seconds in JOBS:
            created_at = T0 + timedelta(seconds=seconds)
            session.add(Job(
                id=job_id, owner_id=1, status=status, base_model="m", dataset_id="d" * 32,
                params={}, config={}, resolved={}, plan=PLAN, created_at=created_at,
                progress={"phase": "training", "step": 3} if status != JobStatus.QUEUED else None,
                error_code="nan_loss" if status == JobStatus.FAILED else None,
                error_message="the loss became NaN" if status == JobStatus.FAILED else None,
            ))  # fmt: skip
    with db.writing() as session:  # as every queue change does (core/jobs/forecast.py)
        refresh_forecast(session, Settings(database_url=url))
    return db


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = _seed(f"sqlite:///{tmp_path / 'poll.db'}")
        yield database
        database.dispose()
    else:
        with fresh_postgres_database() as url:
            database = _seed(url)
            yield database
            database.dispose()


def test_queue_positions_follow_submission_order_with_ties_broken_by_id(db: Database) -> None:
    expected = ["c" * 32, "d" * 32, "e" * 32, "f" * 32, "0" * 32]
    with db.reading() as session:
        assert queued_ids_in_order(session) == expected
        user = session.get_one(User, 1)
        by_session = {j: one_job(session, session.get_one(Job, j)) for j, *_ in JOBS}
    polled = db.read_polling(
        lambda conn: {j: fetch_job_read(conn, user=user, job_id=j) for j, *_ in JOBS}
    )
    assert {j: r.queue_position for j, r in polled.items()} == {
        j: expected.index(j) + 1 if j in expected else None for j, *_ in JOBS
    }
    assert polled == by_session  # the polling path answers exactly what the ORM path does
    assert polled["b" * 32].model_dump()["error"] == {
        "code": "nan_loss",
        "message": "the loss became NaN",
    }


def test_the_poll_reads_one_job_by_its_key_and_counts_nothing_on_sqlite(tmp_path: Path) -> None:
    db = _seed(f"sqlite:///{tmp_path / 'poll.db'}")
    compiled = _POLL.compile(db.engine)
    params = compiled.construct_params({"job_id": "d" * 32})
    with db.engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled),
            tuple(params[name] for name in compiled.positiontup or ()),
        ).all()
    db.dispose()
    details = [str(row[-1]) for row in plan]
    # The place is stored on the row: one primary-key search per table, no scan, no count.
    assert all(d.startswith("SEARCH") for d in details), details
    assert any("jobs USING INDEX" in d and "(id=?)" in d for d in details), details


def test_a_poll_survives_postgres_dropping_its_pooled_connection() -> None:
    # Polls skip the pool's pre-ping; a connection the server closed (a restart) is retried.
    with fresh_postgres_database() as url:
        db = _seed(url)
        backend = db.read_polling(lambda conn: conn.scalar(sa.text("SELECT pg_backend_pid()")))
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            deadline = time.monotonic() + 10
            alive = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            while conn.scalar(alive, {"pid": backend}) and time.monotonic() < deadline:
                time.sleep(0.05)
        admin.dispose()
        with db.reading() as session:
            user = session.get_one(User, 1)
        job = db.read_polling(lambda conn: fetch_job_read(conn, user=user, job_id="d" * 32))
        assert job.queue_position == 2
        db.dispose()
