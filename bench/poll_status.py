"""Status polling: N concurrent clients on GET /v1/jobs/{id} with 10,000 jobs in the database.

python -m bench.poll_status [--db sqlite|postgres|both] [--load wrk|python] [--clients 50[,20,...]]
                            [--seconds 15] [--workers 1]

``--load wrk`` (default) drives the API with wrk (a C load generator: ``wrk -t1 -cN -d15s
--latency``, a random seeded job id per request from a Lua script), so the client costs little
of the box's CPU; ``--load python`` keeps the asyncio client. ``--workers N`` runs
``lorabox api --workers N`` (N processes, each accepting on its own SO_REUSEPORT listener).
Each run prints the load averages it started under: the figures mean little on a busy box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench._stack import drop_postgres, fresh_postgres, prepare, start_api, stop
from core.db import Database, Job
from core.db.tables import JobStatus, new_id, utcnow
from core.jobs.forecast import refresh_forecast
from core.settings import Settings

PLAN = {"total_steps": 100, "batches_per_epoch": 10, "epochs": 10, "warmup_steps": 0,
        "images_x_repeats": 10, "buckets": [{"resolution": [1024, 1024], "count": 10}],
        "warnings": []}  # fmt: skip


def seed_jobs(settings: Settings, count: int) -> list[str]:
    db = Database(settings.database_url)
    statuses = [JobStatus.SUCCEEDED] * 6 + [JobStatus.QUEUED] * 3 + [JobStatus.RUNNING]
    ids = []
    with db.writing() as session:
        owner = session.execute(Job.__table__.select().limit(0))  # noqa: F841 - warm the engine
        from core.db import User

        user_id = session.query(User.id).first()[0]
        rows = []
        for i in range(count):
            job_id = new_id()
            ids.append(job_id)
            rows.append(dict(
                id=job_id, owner_id=user_id, name=f"job {i}", status=statuses[i % 10],
                base_model="sdxl", dataset_id="d" * 32, params={"network_dim": 32},
                config={}, resolved={}, plan=PLAN, progress={"phase": "training", "step": 5},
                cancel_requested=False, stop_requested=False, attempt=1, created_at=utcnow(),
            ))  # fmt: skip
        session.execute(Job.__table__.insert(), rows)
    # Positions and forecasts as every submit leaves them stored (the poll reads them); the
    # refresh's own time is what each queue change costs with this queue.
    started = time.perf_counter()
    with db.writing() as session:
        refresh_forecast(session, settings)
    print(f"refresh_forecast over {statuses.count(JobStatus.QUEUED) * count // 10} queued: "
          f"{time.perf_counter() - started:.2f} s", flush=True)  # fmt: skip
    db.dispose()
    return ids


# --- the Python client (--load python) ---------------------------------------------------------


async def _client(
    host: str,
    port: int,
    token: str,
    ids: list[str],
    deadline: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    """A bare HTTP/1.1 keep-alive client: httpx would spend more CPU than the server."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            request = (f"GET /v1/jobs/{random.choice(ids)} HTTP/1.1\r\nHost: {host}\r\n"
                       f"Authorization: Bearer {token}\r\n\r\n").encode()  # fmt: skip
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
    finally:
        writer.close()


async def hammer(url: str, token: str, ids: list[str], clients: int, seconds: float) -> list[float]:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[int] = []
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(_client(host, int(port), token, ids, deadline, latencies, errors) for _ in range(clients))
    )
    if errors:
        print(f"  non-200 responses: {len(errors)}")
    return latencies


def python_load(base: str, token: str, ids: list[str], clients: int, seconds: float) -> str:
    asyncio.run(hammer(base, token, ids, clients, 2))  # warm-up
    lat = sorted(asyncio.run(hammer(base, token, ids, clients, seconds)))
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return (f"{len(lat) / seconds:7.0f} req/s  p50 {p(0.5):6.1f} ms  p90 {p(0.9):6.1f} ms  "
            f"p99 {p(0.99):6.1f} ms  mean {statistics.mean(lat) * 1000:6.1f} ms")  # fmt: skip


# --- wrk (--load wrk) --------------------------------------------------------------------------

_LUA = """\
local ids = {%s}
local headers = {["Authorization"] = "Bearer %s"}
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/jobs/" .. ids[math.random(#ids)], headers)
end
"""
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def write_lua(path: Path, token: str, ids: list[str]) -> Path:
    path.write_text(_LUA % (",".join(f'"{i}"' for i in ids), token))
    return path


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """req/s, p50/p90/p99 (ms) and failures from ``wrk --latency`` output."""
    found = {f"p{q}": _ms(v) for q, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.M)}
    found["req_s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if len(found) < 4:
        raise KeyError("latency distribution")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: (.*)", out)
    found["non_2xx"] = float(non_2xx.group(1)) if non_2xx else 0.0
    found["socket_errors"] = (
        float(sum(map(int, re.findall(r"\d+", socket.group(1))))) if socket else 0.0
    )
    return found


def wrk_load(base: str, lua: Path, clients: int, seconds: float) -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --load python")
    url = f"{base}/v1/jobs/"
    cmd = [wrk, "-t1", f"-c{clients}", "-s", str(lua), "--latency", "--timeout", "10s"]
    subprocess.run([*cmd, "-d2s", url], check=True, capture_output=True)  # warm-up
    out = subprocess.run([*cmd, f"-d{seconds:g}s", url], check=True, capture_output=True, text=True)
    try:
        r = parse_wrk(out.stdout)
    except (AttributeError, KeyError) as exc:
        raise RuntimeError(f"unexpected wrk output:\n{out.stdout}{out.stderr}") from exc
    errors = f"  non-2xx {r['non_2xx']:.0f} socket errors {r['socket_errors']:.0f}" * bool(
        r["non_2xx"] or r["socket_errors"]
    )
    return (f"{r['req_s']:7.0f} req/s  p50 {r['p50']:6.1f} ms  p90 {r['p90']:6.1f} ms  "
            f"p99 {r['p99']:6.1f} ms{errors}")  # fmt: skip


def _load_avg() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(kind: str, args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lorabox-bench-"))
    pg_name = None
    url = ""
    if kind == "postgres":
        url, pg_name = fresh_postgres()
    settings = Settings(home=tmp, models_dir=tmp / "models", database_url=url)
    token = prepare(settings)
    ids = seed_jobs(settings, args.jobs)
    lua = write_lua(tmp / "poll.lua", token, ids)
    api, base = start_api(settings, workers=args.workers)
    try:
        for clients in args.clients:
            before = _load_avg()
            if args.load == "wrk":
                figures = wrk_load(base, lua, clients, args.seconds)
            else:
                figures = python_load(base, token, ids, clients, args.seconds)
            print(f"{kind:8s} jobs={args.jobs} clients={clients} api_workers={args.workers} "
                  f"load={args.load}: {figures}  ({before})", flush=True)  # fmt: skip
    finally:
        stop(api)
        if pg_name:
            drop_postgres(pg_name)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--load", choices=["wrk", "python"], default="wrk")
    parser.add_argument(
        "--clients", type=lambda s: [int(c) for c in s.split(",")], default=[50],
        help="concurrent connections; a comma-separated list runs each in turn",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument(
        "--workers", type=int, default=1, help="API processes (lorabox api --workers)"
    )
    args = parser.parse_args()
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        run(kind, args)


if __name__ == "__main__":
    main()
