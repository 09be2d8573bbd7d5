"""The database hangs instead of refusing (docs/reliability.md): a private Postgres cluster
behind a loopback TCP proxy that stops forwarding while every connection stays open, so no
call fails by itself. The worker fences itself by the clock (its trainer is gone 0.75 of the
lease after its last renewal); a real `lorabox api` process answers 503 with Retry-After to
requests that need the database and serves the rest at once; a second worker takes the job
over once the lease has run out, resuming from the newest registered state, and the job ends
exactly once. Slow: real workers train the miniature SDXL."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.worker.procs import (
    FAST,
    ExitWatch,
    Faults,
    TcpProxy,
    private_postgres,
    served_fault_stack,
    wait_until,
)

pytestmark = pytest.mark.slow

LEASE_S = 8.0  # the worker fences itself after 0.75 of it without a renewal
HEARTBEAT_S = float(FAST["LORABOX_HEARTBEAT_INTERVAL_S"])
CI_MARGIN_S = 2.0
FENCE_BY_S = LEASE_S * 0.75 + HEARTBEAT_S + CI_MARGIN_S  # from the start of the hang
HANG_S = LEASE_S + 2.0  # longer than the lease: the job must change hands
TAKEOVER_QUEUE = "lorabox-takeover"


def test_a_proxy_that_hangs_holds_every_byte_and_close_until_it_flows() -> None:
    """The fault itself: while hanging nothing crosses either way, connections stay open and
    new ones are accepted; after ``flow()`` what was held arrives, in order, and so does a
    close. ``cut()`` still drops a connection held in a hang."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            while data := conn.recv(100):
                received.append(data)
                conn.sendall(data.upper())
            received.append(b"<eof>")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    proxy = TcpProxy(server.getsockname()[1])
    proxy.restore()
    old = socket.create_connection(("127.0.0.1", proxy.port), 2)
    old.sendall(b"a")
    assert old.recv(10) == b"A"
    proxy.hang()
    old.sendall(b"b")
    fresh = socket.create_connection(("127.0.0.1", proxy.port), 2)  # accepted while hanging
    fresh.sendall(b"c")
    old.settimeout(0.5)
    with pytest.raises(TimeoutError):
        old.recv(10)
    old.settimeout(2)
    old.shutdown(socket.SHUT_WR)
    time.sleep(0.3)
    assert received == [b"a"]  # not the byte, nor the close
    proxy.flow()
    assert old.recv(10) == b"B"
    assert fresh.recv(10) == b"C"
    wait_until(lambda: received.count(b"<eof>") == 1, 5, "the held close")
    proxy.hang()
    proxy.cut()
    fresh.settimeout(2)
    assert fresh.recv(10) == b""
    server.close()


def test_a_database_hang_longer_than_the_lease_fences_the_worker_and_the_job_ends_once(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    """(a) the trainer is gone within 0.75 × lease + one heartbeat (+2 s) of the hang's start,
    not before 0.75 × lease less a heartbeat; (b) meanwhile the API process answers 503 with
    Retry-After within 5 s to requests that need the database, and /healthz (503, database
    not ok), /openapi.json, /docs and the dashboard within 1 s, even while a database call is
    pending; (c) once the lease has run out the second worker runs the job, and the first
    writes nothing after its fence: no file in the job's folder, no event of attempt 1 but
    the reconciler's `worker_lost`; (d) after the hang the job succeeds exactly once, attempt
    2 resuming from attempt 1's newest registered state, with no restart of anything."""
    with private_postgres() as pg_port:
        proxy = TcpProxy(pg_port)
        proxy.restore()
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/postgres"
        try:
            with served_fault_stack(tmp_path / "home", tiny_models_dir, database_url=url,
                                    lease_timeout_s=LEASE_S) as f:  # fmt: skip
                _run(f, proxy, e2e_zip, e2e_payload)
        finally:
            proxy.flow()
            proxy.cut()


def _run(f: Faults, proxy: TcpProxy, data: bytes, payload: Any) -> None:
    f.env["LORABOX_LEASE_TIMEOUT_S"] = str(LEASE_S)
    # The first worker's reconciler makes one pass, at its start: only the second worker's
    # re-queues the job, to a queue only the second consumes, so the takeover is certain.
    # The second's passes leave a new job to its message for 2 s (Settings.wake_grace_s, half
    # its interval), so the first, which the message wakes, takes it even on a busy box.
    first = f.start_worker(LORABOX_TEST_STEP_SLEEP_S="0.5", LORABOX_RECONCILE_INTERVAL_S="3600")
    second = f.start_worker(LORABOX_TEST_STEP_SLEEP_S="0.2", LORABOX_QUEUE_NAME=TAKEOVER_QUEUE,
                            LORABOX_RECONCILE_INTERVAL_S="4")  # fmt: skip
    # Both ready before the job exists: the first claims it at once, and the hang is timed
    # on a box that isn't busy importing torch for the second.
    for log in f.stack.logs[1:]:
        wait_until(lambda log=log: " ready." in log.read_text(errors="replace"), 120, log.name)
    params = payload(epoch=30, save_every_n_epochs=0, save_every_n_steps=2, save_state=True)
    body = {"dataset_id": f.stack.dataset(data), "base_model": "tiny-sdxl", "params": params}
    job_id = f.stack.submit(body)["id"]
    trainer = f.wait_for_trainer(job_id)
    wait_until(lambda: _saved_states(f, job_id, 1), 120, "attempt 1 to register a state")

    proxy.hang()
    hung_at = time.monotonic()
    exit_watch = ExitWatch(trainer)
    latencies = _api_while_hanging(f, job_id)
    ended_at = exit_watch.wait(max(0.0, hung_at + FENCE_BY_S + 5 - time.monotonic()))
    lived_s = ended_at - hung_at
    print(f"trainer lived {lived_s:.2f} s into the hang; API latencies {latencies}")
    assert LEASE_S * 0.5 <= lived_s <= FENCE_BY_S, lived_s  # trained on within the lease
    fenced_wall = exit_watch.ended_wall
    assert fenced_wall is not None
    time.sleep(max(0.0, hung_at + HANG_S - time.monotonic()))
    assert len(f.starts()[job_id]) == 1  # nobody ran the job during the hang
    assert _written_since(f, job_id, fenced_wall) == []
    proxy.flow()

    _wait_recovered(f.stack.client)
    second_trainer = f.wait_for_trainer(job_id, count=2, timeout_s=60)
    done = f.finished(job_id, timeout_s=180)
    assert (done["status"], done["attempt"]) == ("succeeded", 2), f.stack.log_tail()
    assert first.poll() is None and second.poll() is None  # the fenced worker stays up
    assert "lease not renewed" in f.stack.logs[1].read_text(errors="replace")
    takeover_wall = (f.markers / f"{job_id}.{second_trainer}").stat().st_mtime
    assert _written_since(f, job_id, fenced_wall, takeover_wall) == []
    assert _late_events(f, job_id, fenced_wall) == []
    _assert_ran_once_then_resumed(f, job_id, second.pid)


def _api_while_hanging(f: Faults, job_id: str) -> dict[str, float]:
    """Times each request; the first one that needs the database is still pending while the
    others that don't are timed (an event loop blocked by it would hold them too)."""
    client, auth = f.stack.client, f.stack.as_()
    latencies: dict[str, float] = {}

    def get(path: str, bound_s: float, status: int, headers: Any = None) -> httpx.Response:
        start = time.monotonic()
        response = client.get(path, headers=headers, timeout=30)
        took = latencies[path if path not in latencies else f"{path} again"] = round(
            time.monotonic() - start, 3
        )
        assert response.status_code == status, (path, response.status_code, response.text)
        assert took <= bound_s, (path, took)
        if status == 503 and path.startswith("/v1/"):  # /healthz reports, no retry advice
            assert response.headers.get("Retry-After"), path
        return response

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(get, f"/v1/jobs/{job_id}", 5.0, 503, auth)
        time.sleep(0.1)
        health = get("/healthz", 1.0, 503).json()
        assert health["database"] != "ok" and health["status"] != "ok", health
        for path in ("/openapi.json", "/docs", "/", "/static/app.js", "/static/style.css"):
            get(path, 1.0, 200)
        assert "database" in pending.result().json()["detail"]
    get("/v1/jobs", 5.0, 503, auth)
    get(f"/v1/jobs/{job_id}", 5.0, 503, auth)
    return latencies


def _wait_recovered(client: httpx.Client) -> None:
    """After the hang the API answers again by itself (its breaker's probe), no restart."""
    wait_until(
        lambda: client.get("/healthz", timeout=10).status_code == 200, 20, "the API to recover"
    )


def _saved_states(f: Faults, job_id: str, attempt: int) -> list[int]:
    """Steps of the training states that attempt registered."""
    return [
        d["step"]
        for _, a, kind, d in f.events(job_id)
        if kind == "artifact" and a == attempt and d["kind"] == "state"
    ]


def _written_since(f: Faults, job_id: str, since: float, until: float = float("inf")) -> list[str]:
    """Files in the job's folder last modified between ``since`` and ``until`` (wall clock)."""
    folder = f.settings.jobs_dir / job_id
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and since < p.stat().st_mtime < until
    )


def _late_events(f: Faults, job_id: str, since: float) -> list[tuple[int, str]]:
    """Events of attempt 1 created after ``since``, but the reconciler's `worker_lost`."""
    engine = sa.create_engine(f.settings.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, kind FROM job_events WHERE job_id = :j AND attempt = 1 "
                    "AND kind <> 'worker_lost' AND created_at > :t ORDER BY id"
                ),
                {"j": job_id, "t": datetime.fromtimestamp(since, UTC)},
            ).all()
    finally:
        engine.dispose()
    return [(r[0], r[1]) for r in rows]


def _assert_ran_once_then_resumed(f: Faults, job_id: str, second_pid: int) -> None:
    events = f.events(job_id)
    kinds = [(a, kind) for _, a, kind, _ in events if kind in ("started", "finished")]
    assert kinds == [(1, "started"), (2, "started"), (2, "finished")], kinds
    finished = [d for _, _, kind, d in events if kind == "finished"]
    assert finished[0]["status"] == "succeeded"
    started = [d for _, a, kind, d in events if kind == "started" and a == 2]
    assert f":{second_pid}:" in started[0]["worker_id"]  # the second worker took it over
    lost = [(a, d["reason"]) for _, a, kind, d in events if kind == "worker_lost"]
    assert lost == [(1, "lease_expired")]
    assert len(f.starts()[job_id]) == 2  # one trainer process per attempt
    saved = _saved_states(f, job_id, 1)
    resumed = [d for _, a, kind, d in events if kind == "training_started" and a == 2]
    assert saved and resumed[0]["start_step"] == max(saved), (saved, resumed)
    steps = [d["step"] for _, a, kind, d in events if kind == "progress" and a == 2]
    assert min(steps) > max(saved)
