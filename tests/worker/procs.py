"""Real processes for the fault-injection tests: workers with short leases, a private
redis-server, a private Postgres cluster, and a loopback TCP proxy a test can cut.

Servers here are private (their own port and data directory): tests stop and restart them,
never the shared ones on the standard ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.settings import Settings
from tests.conftest import require
from tests.worker.conftest import Stack, free_port, served, service_env
from tests.worker.faults import trainer_starts

# Leases short enough to expire within a test, long enough that a busy 2-core CI box
# (a trainer importing torch starves the heartbeat thread) does not fence a healthy
# worker; the reconciler runs every second.
FAST = {
    "LORABOX_HEARTBEAT_INTERVAL_S": "0.5",
    "LORABOX_LEASE_TIMEOUT_S": "10",
    "LORABOX_RECONCILE_INTERVAL_S": "1",
    "LORABOX_TEST_STEP_HOOK": "tests.worker.faults:hook",
    # One torch thread per trainer: two workers' trainers on two cores, each with an OpenMP
    # pool of two spinning threads, took 9 s for a 0.3 s step.
    "OMP_NUM_THREADS": "1",
}


@dataclass
class Faults:
    """A stack whose workers a test starts, signals and replaces."""

    stack: Stack
    markers: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        log = self.settings.home / f"worker{len(self.workers)}.log"
        self.stack.logs.append(log)
        full = service_env(self.settings) | FAST | self.env | env
        full["LORABOX_TEST_MARKER_DIR"] = str(self.markers)
        with log.open("ab") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "worker"],
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    def starts(self) -> dict[str, list[int]]:
        return trainer_starts(self.markers)

    def wait_for_trainer(self, job_id: str, count: int = 1, timeout_s: float = 120) -> int:
        """The pid of the job's ``count``-th trainer process, once it has started."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = self.starts().get(job_id, [])
            if len(pids) >= count:
                return pids[count - 1]
            time.sleep(0.1)
        raise AssertionError(f"no trainer #{count} for {job_id}:\n{self.stack.log_tail()}")

    def events(self, job_id: str) -> list[tuple[int, int, str, dict[str, Any]]]:
        """(id, attempt, kind, data) in log order."""
        engine = sa.create_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT id, attempt, kind, data FROM job_events WHERE job_id = :j "
                        "ORDER BY id"
                    ),
                    {"j": job_id},
                ).all()
        finally:
            engine.dispose()
        return [(r[0], r[1], r[2], _json(r[3])) for r in rows]

    def finished(self, job_id: str, timeout_s: float = 240) -> dict[str, Any]:
        job, _ = self.stack.wait(
            job_id, lambda j: j["status"] in ("succeeded", "failed", "cancelled"), timeout_s
        )
        return job


@contextlib.contextmanager
def fault_stack(home: Path, models_dir: Path, **settings: Any) -> Iterator[Faults]:
    """API in-process (a TestClient), workers started by the test; all killed at the end."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    @contextlib.contextmanager
    def in_process(config: Settings) -> Iterator[tuple[Any, list[Path]]]:
        with TestClient(create_app(config)) as client:
            yield client, []

    with _faults(home, models_dir, settings, in_process) as faults:
        yield faults


@contextlib.contextmanager
def served_fault_stack(home: Path, models_dir: Path, **settings: Any) -> Iterator[Faults]:
    """As ``fault_stack``, with the API in its own `lorabox api` process (uvicorn's event loop,
    as in production: a TestClient runs sync routes in a thread of the test's own process)
    and an httpx client on it. The API takes its settings from the environment, so a setting
    the API needs must be one ``service_env`` passes."""

    def api_process(config: Settings) -> contextlib.AbstractContextManager[Any]:
        return served(config, worker=False)

    with _faults(home, models_dir, settings, api_process) as faults:
        yield faults


@contextlib.contextmanager
def _faults(
    home: Path,
    models_dir: Path,
    settings: dict[str, Any],
    api: Callable[[Settings], contextlib.AbstractContextManager[Any]],
) -> Iterator[Faults]:
    from tests.worker.conftest import prepare

    options: dict[str, Any] = {"progress_interval_s": 0.5, "flag_poll_interval_s": 0.2}
    config = Settings(home=home, models_dir=models_dir, **(options | settings))
    tokens = prepare(config)
    markers = home / "trainer-starts"
    markers.mkdir()
    faults: Faults | None = None
    try:
        with api(config) as (client, logs):
            faults = Faults(Stack(client, config, tokens, logs), markers)
            yield faults
    finally:
        if faults is not None:
            faults.stop_all()


def _json(value: Any) -> dict[str, Any]:
    import json

    return dict(json.loads(value) if isinstance(value, str) else value)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie still answers kill(0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


class ExitWatch(threading.Thread):
    """Notes when a process ends (polled every 20 ms), so a test can do other things and
    still tell when it happened: ``ended_at`` (monotonic) and ``ended_wall`` (time.time())."""

    def __init__(self, pid: int) -> None:
        super().__init__(name=f"exit-watch-{pid}", daemon=True)
        self.pid = pid
        self.ended_at: float | None = None
        self.ended_wall: float | None = None
        self.start()

    def run(self) -> None:
        while pid_alive(self.pid):
            time.sleep(0.02)
        self.ended_wall, self.ended_at = time.time(), time.monotonic()

    def wait(self, timeout_s: float) -> float:
        """The monotonic time it ended; fails if it is still alive after ``timeout_s``."""
        self.join(timeout_s)
        assert self.ended_at is not None, f"process {self.pid} still alive after {timeout_s} s"
        return self.ended_at


# --- private servers -------------------------------------------------------------------


class PrivateRedis:
    """A redis-server on its own port with no persistence: a restart loses every message."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = free_port(), workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: _port_open(self.port), 20, "redis-server")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class TcpProxy:
    """127.0.0.1:port -> target. ``cut()`` closes every connection and refuses new ones
    (as a dead network or a database host going away would); ``restore()`` listens again.

    ``hang()`` stops forwarding in both directions but keeps every connection open, and
    accepts new ones (opening their upstream) without forwarding a byte on them either: a
    server that stops answering, or a partition that drops packets without resetting
    anything. ``flow()`` ends it: what was sent meanwhile (bytes, and the closes) is delivered
    then, in order, as a healed partition would. A hang outlasts ``cut()``/``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.port, self.target_port = free_port(), target_port
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                with contextlib.suppress(OSError):  # wakes the blocked accept() on Linux
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def hang(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), 5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # an idle server is no reason to close the connection
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        """source -> sink until either closes; while hanging, holds what it read (one chunk;
        the rest waits in the kernel's buffers) and the end of the stream too."""
        try:
            while True:
                try:
                    data = source.recv(65536)
                except OSError:  # reset, or closed by cut()
                    data = b""
                if not self._held_until_flow(sink) or not data:
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def _held_until_flow(self, sink: socket.socket) -> bool:
        """False if ``cut()`` closed the connection while it was held."""
        while not self._flowing.wait(0.2):
            if sink.fileno() == -1:
                return False
        return True


@contextlib.contextmanager
def private_postgres() -> Iterator[int]:
    """A throw-away Postgres cluster (initdb/pg_ctl as the postgres user); yields its port."""
    binaries = shutil.which("initdb") and shutil.which("pg_ctl")
    require(bool(binaries), "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # Outside pytest's tmp_path: its parents are private to root, the server runs as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="lorabox-pg-"))
    data, port = workdir / "pgdata", free_port()
    shutil.chown(workdir, "postgres")

    def as_postgres(command: str) -> None:
        subprocess.run(["su", "postgres", "-c", command], check=True, capture_output=True)

    as_postgres(f"initdb -D {data} -A trust -U postgres --no-sync")
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    as_postgres(f"pg_ctl -D {data} -l {workdir / 'pg.log'} -o '{options}' -w start")
    try:
        yield port
    finally:
        as_postgres(f"pg_ctl -D {data} -m immediate -w stop")
        shutil.rmtree(workdir, ignore_errors=True)
