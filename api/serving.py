"""Running the HTTP API: one process, or N worker processes each accepting on its own listener.

uvicorn's ``--workers`` shares one listening socket among its processes, and asyncio accepts
every pending connection in one go: whichever process wakes first takes a whole burst, so
keep-alive clients (polling scripts, the dashboard's event streams) pile onto one worker
while the others idle. bench/poll_status.py, 50 clients on Postgres, two workers: one at
~85% CPU, the other ~10%, 1,189 req/s, no better than one process. Here every worker has a
socket of its own bound to the same port with SO_REUSEPORT, and the kernel spreads new
connections across them by address hash: 2,272-2,321 req/s, p99 26-29 ms on that bench.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from typing import Any

import uvicorn

UVICORN_OPTIONS: dict[str, Any] = dict(
    app="api.app:create_app",
    factory=True,
    # asyncio's own loop, not uvloop: status polls run their indexed reads inline, and under
    # a closed-loop load of 50 clients uvloop left ~1% of them waiting 1-2 s (p99 ~1 s)
    # where asyncio's loop served every one within ~0.2 s, at the same throughput
    # (bench/poll_status.py). httptools parses HTTP, with Nagle off (see the module).
    loop="asyncio",
    http="api.http_protocol:NoDelayHttpToolsProtocol",
    log_level="info",
    # Bounded, so a stop (SIGTERM, a lost supervisor) ends within the compose stop grace even
    # with an upload in flight; an unfinished upload is swept at the next start.
    timeout_graceful_shutdown=25,
)
BACKLOG = 2048
STARTUP_FAILURE = 3  # uvicorn's exit status when the app or its lifespan cannot start
STOP_TIMEOUT_S = 30.0
# Linux spreads connections over SO_REUSEPORT listeners; macOS and the BSDs accept the option
# but hand every connection to one of them.
BALANCES_REUSEPORT = sys.platform.startswith("linux")


def serve(host: str, port: int, workers: int) -> int:
    """Serve until SIGINT/SIGTERM; the exit status."""
    if workers <= 1 or not BALANCES_REUSEPORT:
        # One process; or no kernel that balances SO_REUSEPORT listeners: uvicorn's workers.
        uvicorn.run(**UVICORN_OPTIONS, host=host, port=port, workers=workers)
        return 0
    try:
        listeners = bind_listeners(host, port, workers)
    except OSError as exc:
        _say(f"cannot listen on {host}:{port}: {exc}")
        return STARTUP_FAILURE
    return Supervisor(listeners, UVICORN_OPTIONS).run()


def bind_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets sharing one port (SO_REUSEPORT); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # SO_REUSEPORT would let us share the port with a server already on it (another lorabox
    # of the same user): a plain bind first fails on any listener there, as uvicorn's does.
    with socket.socket(family) as probe:
        # Connections a previous run left in TIME_WAIT must not fail the probe.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    listeners = []
    for _ in range(count):
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        listeners.append(sock)
    return listeners


def run_worker(
    options: dict[str, Any], listener: socket.socket, lifeline: Connection, ready: EventType
) -> None:
    """A worker process: uvicorn on its own listener. Sets ``ready`` once it serves; stops
    gracefully when the supervisor is gone (its end of ``lifeline`` closes, even on SIGKILL)."""
    threading.Thread(target=_stop_on_eof, args=(lifeline,), daemon=True).start()
    server = _WorkerServer(uvicorn.Config(**options), ready)
    server.run(sockets=[listener])
    if not server.started:  # uvicorn before 0.50 returned normally when the app failed to start
        sys.exit(STARTUP_FAILURE)


class _WorkerServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: EventType) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.ready.set()


def _stop_on_eof(lifeline: Connection) -> None:
    try:
        lifeline.recv()
    except (EOFError, OSError):
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Slot:
    """One listener and the worker serving it (replaced when it dies)."""

    listener: socket.socket
    ready: EventType
    process: BaseProcess | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # set while a dead worker waits out its backoff
    backoff_s: float = 0.0
    restarted: bool = False  # at least once: a later early death is not a failed start


class Supervisor:
    """Starts a worker per listener, restarts one that dies (backing off while it keeps dying
    young) and stops them all on SIGINT/SIGTERM; a second Ctrl-C cuts their graceful stop
    short. If a worker exits with an error before it ever served, at its first start (the
    app, its settings or its storage can't start), the server stops with exit status 3, as a
    single uvicorn process would: restarting would fail the same way."""

    def __init__(self, listeners: list[socket.socket], options: dict[str, Any]) -> None:
        self.options = options
        self._spawn = multiprocessing.get_context("spawn")
        self.slots = [_Slot(listener, self._spawn.Event()) for listener in listeners]
        # Workers hold the read end; ours is the only write end, so they see EOF when we die.
        self._lifeline_read, self._lifeline_write = self._spawn.Pipe(duplex=False)
        self._stop_requested = False
        self._force_stop = False

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        for slot in self.slots:
            self._start(slot)
        status = 0
        while not self._stop_requested and not status:
            running = [s.process.sentinel for s in self.slots if s.process and s.restart_at is None]
            wait(running, timeout=self._until_next_restart())
            status = self._tend()
        self._stop_all()
        return status

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Plain flags only: a handler that took a lock (threading.Event.set) could deadlock on
        # one the interrupted main thread holds. Like uvicorn, a second Ctrl-C forces the stop
        # (SIGINT then SIGTERM, as `lorabox up` sends, does not).
        if self._stop_requested and signum == signal.SIGINT:
            self._force_stop = True
        self._stop_requested = True

    def _start(self, slot: _Slot) -> None:
        slot.ready.clear()
        slot.process = self._spawn.Process(
            target=run_worker,
            args=(self.options, slot.listener, self._lifeline_read, slot.ready),
            name=f"lorabox-api-{self.slots.index(slot)}",
        )
        slot.process.start()
        slot.started_at = time.monotonic()

    def _tend(self) -> int:
        """Schedules the restart of each worker that died and starts those now due."""
        now = time.monotonic()
        for i, slot in enumerate(self.slots):
            worker = slot.process
            if worker is not None and slot.restart_at is None and not worker.is_alive():
                # Killed by a signal (OOM, an operator) is not the app failing to start.
                if not slot.ready.is_set() and (worker.exitcode or 0) > 0 and not slot.restarted:
                    _say(f"API worker {i} exited ({worker.exitcode}) before serving; stopping")
                    return STARTUP_FAILURE
                lived = now - slot.started_at
                slot.backoff_s = 0.0 if lived > 60 else min(30.0, max(0.5, 2 * slot.backoff_s))
                slot.restart_at = now + slot.backoff_s
                _say(
                    f"API worker {i} (pid {worker.pid}) exited ({worker.exitcode}) after"
                    f" {lived:.0f} s; restarting in {slot.backoff_s:.1f} s"
                )
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                slot.restarted = True
                self._start(slot)
        return 0

    def _until_next_restart(self) -> float:
        due = [s.restart_at - time.monotonic() for s in self.slots if s.restart_at is not None]
        return max(0.0, min([0.5, *due]))

    def _stop_all(self) -> None:
        workers = [slot.process for slot in self.slots if slot.process is not None]
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not self._force_stop and time.monotonic() < deadline:
            alive = [w.sentinel for w in workers if w.is_alive()]
            if not alive:
                break
            wait(alive, timeout=0.2)
        for worker in workers:
            if worker.is_alive():  # still in its graceful stop: its connections are cut
                worker.kill()
            worker.join()
        self._lifeline_write.close()


def _say(message: str) -> None:
    print(f"lorabox api: {message}", file=sys.stderr, flush=True)
