"""Engines and sessions for SQLite (embedded) and Postgres (production), one code path."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.deadline import CALL_TIMEOUT, Breaker, CallLimits, CallWatchdog, install_bounds

if TYPE_CHECKING:
    from core.settings import Settings

_IMMEDIATE = "lorabox_immediate"
T = TypeVar("T")


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred-only).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A deferred transaction that reads then writes can fail with "database is locked"
        # without waiting (its snapshot went stale); writers take the lock up front.
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _postgres_connect_args(limits: CallLimits | None) -> dict[str, Any]:
    if limits is None:  # migrations: a long ALTER must not be cut short
        return {"connect_timeout": 5}
    statement_ms = int(limits.statement_timeout_s * 1000)
    return {
        # libpq's connect_timeout is whole seconds, at least 2; it also bounds the start-up
        # exchange, so a server that accepts and then hangs fails the connect in time.
        "connect_timeout": max(2, math.ceil(limits.call_timeout_s)),
        "options": f"-c statement_timeout={statement_ms}",
    }


DEFAULT_LIMITS = CallLimits()


class Database:
    """An engine plus two session factories: reads, and writes that lock up front on SQLite.

    On Postgres every call is bounded by ``limits`` (``core.db.deadline``); ``limits=None``
    leaves calls unbounded (migrations)."""

    def __init__(
        self, url: str, *, pool_size: int = 20, limits: CallLimits | None = DEFAULT_LIMITS
    ) -> None:
        self.url = url
        is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"pool_pre_ping": not is_sqlite}
        if is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = pool_size
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["connect_args"] = _postgres_connect_args(limits)
        self.engine = sa.create_engine(url, **kwargs)
        self.is_sqlite = is_sqlite
        self.limits = limits
        if is_sqlite:
            _configure_sqlite(self.engine)
        write_engine = self.engine.execution_options(**{_IMMEDIATE: True})
        # Status polls read through a pool of their own on Postgres: in autocommit (under READ
        # COMMITTED each statement takes its own snapshot anyway, so BEGIN and ROLLBACK would be
        # two round trips for nothing) and without the pre-ping (another round trip, a quarter
        # of a poll's time): `read_polling` retries once on a connection the server dropped.
        self._polling = self.engine
        if not is_sqlite:
            self._polling = sa.create_engine(
                url, isolation_level="AUTOCOMMIT", connect_args=kwargs["connect_args"]
            )
        self.read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.write_sessions = sessionmaker(write_engine, expire_on_commit=False)
        self.breaker: Breaker | None = None
        if limits is not None and not is_sqlite:
            self.breaker = Breaker(self._probe, limits.probe_interval_s)
            watchdog = CallWatchdog(self.breaker.trip)
            for engine in (self.engine, self._polling):
                install_bounds(engine, watchdog, self.breaker, limits.call_timeout_s)

    @classmethod
    def for_settings(cls, settings: Settings, *, pool_size: int = 20) -> Database:
        return cls(settings.database_url, pool_size=pool_size, limits=settings.db_limits())

    def _check(self) -> None:
        if self.breaker is not None:
            self.breaker.check()

    @contextmanager
    def on_event_loop(self) -> Iterator[None]:
        """For the calls the API makes on its event loop: they fail at once while the breaker
        is open, and wait at most ``loop_call_timeout_s`` (each blocks every request)."""
        self._check()
        if self.limits is None:
            yield
            return
        token = CALL_TIMEOUT.set(self.limits.loop_call_timeout_s)
        try:
            yield
        finally:
            CALL_TIMEOUT.reset(token)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        self._check()
        with self.read_sessions() as session:
            yield session

    def read_polling(self, read: Callable[[sa.Connection], T]) -> T:
        """``read(conn)`` on a plain Core connection: the hot read path (status polls), with no
        ORM session to set up and tear down. A read that finds its pooled connection dropped by
        the server (a restart) is retried once on a new one, as a pre-ping would have done."""
        self._check()
        for attempt in (1, 2):
            try:
                with self._polling.connect() as conn:
                    return read(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                self._check()  # dropped for a timeout (the breaker is open): no retry
        raise AssertionError("unreachable")

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A transaction committed on success, rolled back on error."""
        self._check()
        with self.write_sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        self._check()
        self._probe()

    def _probe(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        if self.breaker is not None:
            self.breaker.stop()  # its probe must not reopen connections after this
        self.engine.dispose()
        self._polling.dispose()
