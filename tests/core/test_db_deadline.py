"""Every database call is bounded from the client side (core/db/deadline.py): a call that gets
no answer has its connection dropped, and the breaker fails later calls at once until a probe
reaches the server. Shown on the real server with pg_sleep standing in for a hang."""

from __future__ import annotations

import socket
import time

import pytest
import sqlalchemy as sa

from core.db import Database
from core.db.deadline import CallLimits, DatabaseUnavailable
from tests.conftest import PG_URL, require_server

SLEEP = sa.text("SELECT pg_sleep(5)")


@pytest.fixture
def db() -> Database:
    require_server(PG_URL, "PostgreSQL")
    limits = CallLimits(call_timeout_s=0.6, loop_call_timeout_s=0.3, statement_timeout_s=30,
                        probe_interval_s=0.2)  # fmt: skip
    database = Database(PG_URL, pool_size=2, limits=limits)
    yield database
    database.dispose()


def _elapsed(call) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def test_a_call_without_an_answer_fails_at_its_bound_and_its_connection_is_dropped(db):
    def sleep() -> None:
        with db.reading() as session:
            session.execute(SLEEP)

    took, error = _elapsed(sleep)
    assert isinstance(error, sa.exc.OperationalError) and 0.5 < took < 2.0, (took, error)
    assert error.connection_invalidated


def test_the_breaker_fails_calls_at_once_until_the_server_answers_again(db):
    with pytest.raises(sa.exc.OperationalError), db.reading() as session:
        session.execute(SLEEP)
    took, error = _elapsed(db.ping)
    assert isinstance(error, DatabaseUnavailable) and took < 0.05
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the probe reaches the healthy server and closes it
        if _elapsed(db.ping)[1] is None:
            break
        time.sleep(0.05)
    assert _elapsed(db.ping)[1] is None
    with db.writing() as session:
        assert session.execute(sa.text("SELECT 1")).scalar() == 1


def test_a_call_on_the_event_loop_gets_the_shorter_bound(db):
    def poll() -> None:
        with db.on_event_loop():
            db.read_polling(lambda conn: conn.execute(SLEEP))

    took, error = _elapsed(poll)
    assert isinstance(error, sa.exc.OperationalError) and 0.25 < took < 1.0, (took, error)
    # The server was only slow: the breaker's first probe, at once, closes it again.
    deadline = time.monotonic() + 0.5
    while _elapsed(db.ping)[1] is not None:
        assert time.monotonic() < deadline, "a healthy server kept the breaker open"
        time.sleep(0.02)


def test_a_slow_query_on_a_reachable_server_is_cancelled_by_the_server_and_trips_nothing():
    require_server(PG_URL, "PostgreSQL")
    limits = CallLimits(call_timeout_s=5, statement_timeout_s=0.3)
    db = Database(PG_URL, pool_size=1, limits=limits)
    try:
        with (
            pytest.raises(sa.exc.OperationalError, match="statement timeout"),
            db.reading() as session,
        ):
            session.execute(SLEEP)
        assert db.breaker is not None and db.breaker.open_for_s is None
        db.ping()
    finally:
        db.dispose()


def test_migrations_run_unbounded():
    require_server(PG_URL, "PostgreSQL")
    db = Database(PG_URL, pool_size=1, limits=None)
    try:
        with db.reading() as session:
            session.execute(sa.text("SELECT pg_sleep(0.8)"))  # past any default bound's share
        assert db.breaker is None
    finally:
        db.dispose()


@pytest.fixture
def silent_server():
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{listener.getsockname()[1]}/test"


def test_a_connect_on_the_event_loop_gets_the_loop_bound_and_opens_the_breaker(silent_server):
    db = Database(silent_server, pool_size=1, limits=CallLimits(loop_call_timeout_s=0.3))
    try:

        def poll() -> None:
            with db.on_event_loop():
                db.read_polling(lambda conn: conn.execute(sa.text("SELECT 1")))

        took, error = _elapsed(poll)
        assert isinstance(error, DatabaseUnavailable) and took < 0.8, (took, error)
        took, error = _elapsed(db.ping)  # no second connect attempt while it is open
        assert isinstance(error, DatabaseUnavailable) and took < 0.05
    finally:
        db.dispose()


def test_a_connect_from_a_thread_times_out_with_libpq_and_opens_the_breaker(silent_server):
    db = Database(silent_server, pool_size=1, limits=CallLimits(call_timeout_s=0.5))
    try:
        took, error = _elapsed(db.ping)  # libpq's connect_timeout: whole seconds, at least 2
        assert isinstance(error, sa.exc.OperationalError) and took < 3.5, (took, error)
        assert db.breaker is not None and db.breaker.open_for_s is not None
    finally:
        db.dispose()
