"""`lorabox api --workers N`: every worker accepts on a listener of its own (SO_REUSEPORT),
so keep-alive clients spread over all of them; a dead worker is replaced; the server stops
whole on SIGTERM, and its workers stop when it is killed."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from api.serving import BALANCES_REUSEPORT, bind_listeners

pytestmark = pytest.mark.skipif(not BALANCES_REUSEPORT, reason="SO_REUSEPORT balances on Linux")
REPO = Path(__file__).resolve().parents[2]


@contextmanager
def running(cmd: list[str], **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """A process group from the repo root, SIGKILLed on the way out if still there."""
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, text=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def supervisor(
    workers: int, *app: str, log: Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    cmd = [sys.executable, "-m", "tests.api.serving_app", str(workers), *app]
    with running(cmd, stdout=subprocess.PIPE, stderr=log.open("w") if log else None) as proc:
        assert proc.stdout is not None
        yield proc, int(proc.stdout.readline())


@contextmanager
def serving(workers: int) -> Iterator[tuple[subprocess.Popen[str], int, set[int]]]:
    """A supervisor whose workers all serve: it, its port and the workers' pids."""
    with supervisor(workers) as (proc, port):
        wait_ready(port, workers)
        yield proc, port, worker_pids(proc)


def eventually(check: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def pids_behind(port: int, connections: int) -> collections.Counter[int]:
    """Opens ``connections`` keep-alive connections at once, then asks each for its pid."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(connections)]
    pids: collections.Counter[int] = collections.Counter()
    for sock in socks:
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            pids[int(_body(sock))] += 1
    return pids


def _body(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096) or _closed()
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096) or _closed()
    return body


def _closed() -> bytes:
    raise ConnectionError("the server closed the connection")


def serving_pids(port: int) -> set[int]:
    try:
        return set(pids_behind(port, 16))
    except OSError:  # a worker (re)starting: try again
        return set()


def crash_a_worker(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(OSError):
            sock.recv(1)


def alive(pids: set[int]) -> set[int]:
    """Those still running (a zombie nobody reaped yet counts as gone)."""
    running = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
    return running


def worker_pids(proc: subprocess.Popen[str]) -> set[int]:
    pids = set()
    for child in psutil.Process(proc.pid).children():
        with contextlib.suppress(psutil.Error):  # gone, or a zombie not yet reaped
            if "spawn_main" in " ".join(child.cmdline()):
                pids.add(child.pid)
    return pids


def wait_ready(port: int, workers: int) -> None:
    eventually(lambda: len(serving_pids(port)) == workers)


def test_listeners_share_one_port_picked_once():
    listeners = bind_listeners("127.0.0.1", 0, 3)
    try:
        assert len({s.getsockname() for s in listeners}) == 1
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in listeners)
    finally:
        for s in listeners:
            s.close()


def test_a_port_another_server_listens_on_is_refused_even_with_reuseport():
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError):
            bind_listeners("127.0.0.1", plain.getsockname()[1], 2)
    others = bind_listeners("127.0.0.1", 0, 2)  # another lorabox api, same user
    try:
        with pytest.raises(OSError):
            bind_listeners("127.0.0.1", others[0].getsockname()[1], 2)
    finally:
        for s in others:
            s.close()


def test_keep_alive_clients_opened_at_once_spread_over_every_worker():
    with serving(2) as (_proc, port, _workers):
        counts = pids_behind(port, 40)
    assert len(counts) == 2, counts
    # The kernel hashes each connection to a listener: 40 at 50/50 leave fewer than 8 on
    # one side with probability ~4e-5. uvicorn's shared socket gave one worker nearly all.
    assert min(counts.values()) >= 8, counts


def test_a_killed_worker_is_replaced_and_the_others_keep_serving():
    with serving(2) as (proc, port, before):
        victim = before.pop()
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: len(worker_pids(proc) - {victim}) == 2)
        replacement = (worker_pids(proc) - before - {victim}).pop()
        eventually(lambda: replacement in serving_pids(port))
        assert proc.poll() is None


def test_sigterm_stops_the_server_and_every_worker():
    with serving(2) as (proc, _port, workers):
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        eventually(lambda: not alive(workers), 10)


def test_a_second_ctrl_c_cuts_the_graceful_stop_short():
    with serving(1) as (proc, port, workers):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as hanging:
            hanging.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)  # the request is in flight
            os.kill(proc.pid, signal.SIGINT)
            os.kill(proc.pid, signal.SIGTERM)  # what `lorabox up` adds: still graceful
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(1.5)  # a graceful stop waits for the request (up to 30 s)
            os.kill(proc.pid, signal.SIGINT)
            assert proc.wait(5) == 0
        eventually(lambda: not alive(workers), 10)


def test_workers_stop_when_the_supervisor_is_killed():
    with serving(2) as (proc, port, workers):
        os.kill(proc.pid, signal.SIGKILL)  # no chance to stop them: the lifeline closes
        proc.wait()
        eventually(lambda: not alive(workers), 15)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)


def test_a_worker_that_keeps_dying_waits_longer_each_time_and_sigterm_ends_the_wait(tmp_path):
    log = tmp_path / "supervisor.log"
    with supervisor(1, log=log) as (proc, port):
        for backoff in ("0.5", "1.0", "2.0", "4.0"):
            wait_ready(port, 1)
            crash_a_worker(port)
            eventually(lambda: f"restarting in {backoff} s" in log.read_text())  # noqa: B023
        asked = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        assert time.monotonic() - asked < 3.0, "sat out the 4 s backoff"


def test_an_app_that_cannot_start_stops_the_server_with_status_3():
    with supervisor(2, "tests.api.no_such_module:app") as (proc, _port):
        assert proc.wait(60) == 3


def test_lorabox_api_with_two_workers_serves_and_stops_on_sigterm(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {"LORABOX_HOME": str(tmp_path / "home"), "LORABOX_DATABASE_URL": "",
                        "LORABOX_BROKER_URL": "", "LORABOX_API_WORKERS": "2"}  # fmt: skip
    subprocess.run([sys.executable, "-m", "cli.main", "db", "upgrade"], env=env, check=True,
                   cwd=REPO, capture_output=True)  # fmt: skip
    with running([sys.executable, "-m", "cli.main", "api", "--port", str(port)], env=env) as proc:
        eventually(lambda: _healthy(port), 120)
        workers = worker_pids(proc)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
        eventually(lambda: not alive(workers), 10)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
