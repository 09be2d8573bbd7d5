"""Client-side bounds on database calls, for a server that hangs instead of refusing.

A server-side ``statement_timeout`` never fires when nothing reaches the server, and TCP
keepalives or ``tcp_user_timeout`` never fire while the path still acknowledges packets (a
partition behind a proxy or NAT, a failing-over cloud database): a libpq call on such a
connection waits forever. So the caller bounds every call itself, without moving it to
another thread (a thread hop per status poll halved its throughput: docs/reliability.md,
"Database hangs"): while a call runs, :class:`CallWatchdog` holds its deadline, and a call
still waiting at its deadline has its connection's socket shut down. The blocked call then
fails at once with the driver's own "connection closed" error, which SQLAlchemy reports as
an ``OperationalError`` and answers by discarding the connection from its pool.

One timed-out call opens the :class:`Breaker`: until a probe reaches the server again, calls
fail at once instead of each waiting out its bound.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallLimits:
    """How long one database call may wait (settings: ``LORABOX_DB_*``)."""

    call_timeout_s: float = 3.0  # any call from a thread (routes, the worker, the reconciler)
    loop_call_timeout_s: float = 0.5  # a call made on the API's event loop blocks every request
    statement_timeout_s: float = 2.5  # server side, for slow queries on a reachable server
    probe_interval_s: float = 0.5  # how often an open breaker tries the server again


# The bound for calls made in this context (``Database.on_event_loop`` narrows it).
CALL_TIMEOUT: ContextVar[float | None] = ContextVar("lorabox_db_call_timeout", default=None)


# Set while the breaker's own probe runs: the one caller that may connect while it is open.
PROBING: ContextVar[bool] = ContextVar("lorabox_db_probing", default=False)


class DatabaseUnavailable(sa.exc.OperationalError):
    """The breaker is open: a recent call timed out and no probe has reached the server since.
    An ``OperationalError``, so every caller treats it as the database being down (503)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, None, ConnectionError(message))


@dataclass(order=True)
class _Armed:
    deadline: float
    token: int
    fileno: int = -1
    identity: tuple[int, int] = (-1, -1)  # (st_dev, st_ino): fd numbers are reused
    timeout_s: float = 0.0


class CallWatchdog:
    """One thread per engine that shuts down the socket of every call past its deadline."""

    def __init__(self, on_timeout: Callable[[float], None]) -> None:
        self._on_timeout = on_timeout
        self._heap: list[_Armed] = []
        self._live: dict[int, _Armed] = {}
        self._tokens = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def bounded(self, dbapi_connection: Any, timeout_s: float | None) -> Iterator[None]:
        fileno = _fileno(dbapi_connection)
        if timeout_s is None or fileno < 0:
            yield
            return
        deadline = time.monotonic() + timeout_s
        armed = _Armed(deadline, next(self._tokens), fileno, _identity(fileno), timeout_s)
        with self._wake:
            self._start()
            self._live[armed.token] = armed
            # Wake the thread only when it would sleep past this deadline: on the hot path
            # (status polls, one bound for all) a new deadline is never the nearest.
            if not self._heap or armed.deadline < self._heap[0].deadline:
                self._wake.notify()
            heapq.heappush(self._heap, armed)
        try:
            yield
        finally:
            with self._wake:
                self._live.pop(armed.token, None)

    def timed_out(self, timeout_s: float) -> None:
        """A call the driver itself gave up on (a connect past ``connect_timeout``)."""
        self._on_timeout(timeout_s)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0].token not in self._live:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._wake.wait()
                    continue
                wait_s = self._heap[0].deadline - time.monotonic()
                if wait_s > 0:
                    self._wake.wait(wait_s)
                    continue
                late = heapq.heappop(self._heap)
                self._live.pop(late.token, None)
                # The breaker opens first: the caller woken here must not retry on a new
                # connection. Under the lock, so the call can't leave ``bounded`` meanwhile.
                self._on_timeout(late.timeout_s)
                _shut_down(late.fileno, late.identity)
            log.warning("database call got no answer in %.1f s: connection dropped", late.timeout_s)


def _fileno(dbapi_connection: Any) -> int:
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:  # SQLite: a local file, nothing on the network to hang on
        return -1
    try:
        return int(fileno())
    except Exception:  # noqa: BLE001 - a closed connection has no socket to watch
        return -1


def _identity(fileno: int) -> tuple[int, int]:
    try:
        stat = os.fstat(fileno)
    except OSError:
        return (-2, -2)
    return (stat.st_dev, stat.st_ino)


def _shut_down(fileno: int, identity: tuple[int, int]) -> None:
    """Wakes the thread blocked on this socket (it reads EOF); the fd stays owned by libpq.
    The duplicate is checked, not the number: libpq may have closed the fd (a reset) and the
    number been reused by another socket since."""
    try:
        dup = os.dup(fileno)
    except OSError:
        return
    try:
        if _identity(dup) == identity:
            with socket.socket(fileno=os.dup(dup)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        os.close(dup)


class Breaker:
    """Open after a call timed out; closed again by a probe that reaches the server.

    The first probe runs at once: a server that was only slow (a lock, a checkpoint) closes
    the breaker again within one round trip; a hung one keeps it open, probed every
    ``interval_s`` with the full call bound."""

    def __init__(self, probe: Callable[[], None], interval_s: float) -> None:
        self._probe, self._interval_s = probe, interval_s
        self._opened_at: float | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def open_for_s(self) -> float | None:
        opened = self._opened_at
        return None if opened is None else time.monotonic() - opened

    def check(self) -> None:
        down_s = self.open_for_s
        if down_s is not None:
            raise DatabaseUnavailable(
                f"the database has not answered for {down_s:.1f} s (a call timed out)"
            )

    def trip(self, _timeout_s: float) -> None:
        with self._lock:
            if self._opened_at is not None or self._stopped.is_set():
                return
            self._opened_at = time.monotonic()
        threading.Thread(target=self._probe_until_closed, name="db-probe", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _probe_until_closed(self) -> None:
        PROBING.set(True)  # this thread's own context: it may connect while open
        CALL_TIMEOUT.set(None)  # and waits the full bound, whoever tripped the breaker
        while not self._stopped.is_set():
            try:
                self._probe()
            except Exception as exc:  # noqa: BLE001 - any failure: still down, probe again
                log.info("database still unreachable: %s", type(exc).__name__)
                self._stopped.wait(self._interval_s)
                continue
            with self._lock:
                log.warning("database answers again after %.1f s", self.open_for_s or 0.0)
                self._opened_at = None
            return


class _Spares:
    """Connections that answered after their event-loop caller gave up (a slow TLS handshake to
    a distant server): the next connect takes one instead of starting over, so a server that
    is slow to connect, not hung, still gets its pool filled."""

    def __init__(self, keep: int = 2) -> None:
        self._keep, self._items, self._lock = keep, list[Any](), threading.Lock()

    def put(self, connection: Any) -> None:
        with self._lock:
            if len(self._items) < self._keep:
                self._items.append(connection)
                return
        with contextlib.suppress(Exception):
            connection.close()

    def take(self) -> Any | None:
        with self._lock:
            return self._items.pop() if self._items else None


def _connect_within(
    connect: Callable[[], Any], timeout_s: float, watchdog: CallWatchdog, spares: _Spares
) -> Any:
    """A connect on the event loop: libpq's connect_timeout is whole seconds (at least 2),
    far past the loop's bound, and a connect has no socket to watch until it returns. So it
    runs in a thread of its own, waited for ``timeout_s``; one that answers late is kept."""
    outcome: dict[str, Any] = {}
    lock, done = threading.Lock(), threading.Event()

    def run() -> None:
        try:
            connection = connect()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
            connection = None
        with lock:
            if outcome.get("abandoned"):
                if connection is not None:
                    spares.put(connection)
                return
            outcome["connection"] = connection
            done.set()

    threading.Thread(target=run, name="db-connect", daemon=True).start()
    if not done.wait(timeout_s):
        with lock:
            if not done.is_set():
                outcome["abandoned"] = True
        if outcome.get("abandoned"):
            watchdog.timed_out(timeout_s)  # the breaker's probe tells slow from hung
            raise DatabaseUnavailable(f"the database did not accept a connection in {timeout_s} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["connection"]


def install_bounds(
    engine: sa.Engine, watchdog: CallWatchdog, breaker: Breaker, default_s: float
) -> None:
    """Every statement, commit, rollback and pre-ping on ``engine`` runs under a deadline:
    the context's (``CALL_TIMEOUT``) or ``default_s``; no new connection is opened while the
    breaker is open (a pool replacing a connection that failed its pre-ping would otherwise
    wait out ``connect_timeout``, on the event loop if that is where the call came from)."""

    spares = _Spares()

    def connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        if not PROBING.get():
            breaker.check()
        if (spare := spares.take()) is not None:
            return spare
        narrowed = CALL_TIMEOUT.get()
        if narrowed is None:
            return None  # SQLAlchemy connects, within libpq's connect_timeout
        make = lambda: dialect.connect(*cargs, **cparams)  # noqa: E731
        return _connect_within(make, narrowed, watchdog, spares)

    sa.event.listen(engine, "do_connect", connect)

    def bound() -> float:
        narrowed = CALL_TIMEOUT.get()
        return default_s if narrowed is None else min(narrowed, default_s)

    def run(method: str) -> Callable[..., bool]:
        def execute(cursor: Any, statement: Any, parameters: Any = None, context: Any = None):
            with watchdog.bounded(cursor.connection, bound()):
                if method == "execute_no_params":
                    cursor.execute(statement)
                else:
                    getattr(cursor, method)(statement, parameters)
            return True  # executed here (sqlalchemy DialectEvents.do_execute)

        return execute

    def connect_failed(context: sa.engine.ExceptionContext) -> None:
        # A connect that timed out (the server accepted, then said nothing) is a hang too;
        # a refused one fails fast by itself and opens nothing.
        if isinstance(context.original_exception, psycopg.errors.ConnectionTimeout):
            watchdog.timed_out(default_s)

    sa.event.listen(engine, "handle_error", connect_failed)
    sa.event.listen(engine, "do_execute", run("execute"))
    sa.event.listen(engine, "do_executemany", run("executemany"))
    sa.event.listen(engine, "do_execute_no_params", run("execute_no_params"))
    # No event wraps these three: the dialect's own methods are wrapped on this engine's
    # dialect instance (a pre-ping on a hung connection would wait as long as a query).
    dialect = engine.dialect
    for name in ("do_commit", "do_rollback", "do_ping"):
        original = getattr(dialect, name)

        def wrapped(dbapi_connection: Any, _original: Callable[[Any], Any] = original) -> Any:
            with watchdog.bounded(dbapi_connection, bound()):
                return _original(dbapi_connection)

        setattr(dialect, name, wrapped)
