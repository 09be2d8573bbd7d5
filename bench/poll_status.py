"""Status polling: N concurrent clients on GET /v1/jobs/{id} with 10,000 jobs in the database.

python -m bench.poll_status [--db sqlite|postgres|both] [--clients 50] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from api.db import Database, Job
from api.db.models import JobStatus, new_id, utcnow
from api.settings import Settings
from bench._stack import drop_postgres, fresh_postgres, prepare, start_api, stop

PLAN = {"total_steps": 100, "batches_per_epoch": 10, "epochs": 10, "warmup_steps": 0,
        "images_x_repeats": 10, "buckets": [{"resolution": [1024, 1024], "count": 10}],
        "warnings": []}  # fmt: skip


def seed_jobs(settings: Settings, count: int) -> list[str]:
    db = Database(settings.database_url)
    statuses = [JobStatus.SUCCEEDED] * 6 + [JobStatus.QUEUED] * 3 + [JobStatus.RUNNING]
    ids = []
    with db.writing() as session:
        owner = session.execute(Job.__table__.select().limit(0))  # noqa: F841 - warm the engine
        from api.db import User

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
    db.dispose()
    return ids


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


def run(kind: str, args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lorabox-bench-"))
    pg_name = None
    url = ""
    if kind == "postgres":
        url, pg_name = fresh_postgres()
    settings = Settings(home=tmp, models_dir=tmp / "models", database_url=url)
    token = prepare(settings)
    ids = seed_jobs(settings, args.jobs)
    api, base = start_api(settings, workers=args.workers)
    try:
        asyncio.run(hammer(base, token, ids, args.clients, 2))  # warm-up
        lat = asyncio.run(hammer(base, token, ids, args.clients, args.seconds))
    finally:
        stop(api)
        if pg_name:
            drop_postgres(pg_name)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    print(f"{kind:8s} jobs={args.jobs} clients={args.clients} api_workers={args.workers}: "
          f"{len(lat) / args.seconds:7.0f} req/s  p50 {p(0.5):6.1f} ms  p99 {p(0.99):6.1f} ms  "
          f"mean {statistics.mean(lat) * 1000:6.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        run(kind, args)


if __name__ == "__main__":
    main()
