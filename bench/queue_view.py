"""The team's queue view: GET /v1/queue against a real `lorabox api` with 3,000 queued jobs.

python -m bench.queue_view [--db sqlite|postgres|both] [--queued 3000] [--finished 7000]
                           [--requests 200]

Seeds three users' jobs (queued ones with stored positions 1..N, as the scheduler leaves
them, two running, the rest finished), then times sequential keep-alive requests: the first
page (the dashboard's, 100 jobs), a 500-job page, a walk over every page by cursor, and, for
scale, one status poll (GET /v1/jobs/{id}). Prints median and p95 latency and the body size.
Sequential on purpose: it measures what one request costs, not the box's throughput.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench._stack import drop_postgres, fresh_postgres, prepare, start_api, stop
from core.db import Database, Job, User
from core.db.tables import JobStatus, new_id, utcnow
from core.settings import Settings
from core.users import add_user

PLAN = {"total_steps": 100, "batches_per_epoch": 10, "epochs": 10, "warmup_steps": 0,
        "images_x_repeats": 10, "buckets": [], "warnings": []}  # fmt: skip


def seed(settings: Settings, queued: int, finished: int) -> str:
    """Three users' jobs; returns a queued job's id."""
    db = Database(settings.database_url)
    with db.writing() as session:
        for name in ("ann", "ben", "cat"):
            add_user(session, name=name)
        owners = [u.id for u in session.query(User).filter(User.name.in_(["ann", "ben", "cat"]))]
        now = utcnow()
        statuses = [JobStatus.RUNNING] * 2 + [JobStatus.QUEUED] * queued
        statuses += [JobStatus.SUCCEEDED] * finished
        rows = [dict(
            id=new_id(), owner_id=owners[i % 3], name=f"job {i}", status=status,
            base_model="sdxl", dataset_id="d" * 32, params={"network_dim": 32}, config={},
            resolved={}, plan=PLAN, progress={"phase": "training", "step": 5},
            cancel_requested=False, stop_requested=False, attempt=1, created_at=now,
            queue_position=i - 1 if status == JobStatus.QUEUED else None,
            estimated_start_at=now, estimated_finish_at=now,
        ) for i, status in enumerate(statuses)]  # fmt: skip
        session.execute(sa.insert(Job), rows)
    db.dispose()
    return str(rows[2]["id"])


def timed(client: httpx.Client, path: str, n: int, **params: int) -> tuple[list[float], int]:
    latencies, size = [], 0
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(path, params=params)
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
        size = len(response.content)
    return latencies, size


def walk(client: httpx.Client, limit: int) -> tuple[float, int, int]:
    """Every page by cursor: seconds, pages, jobs."""
    start, pages, jobs, cursor = time.perf_counter(), 0, 0, None
    while True:
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/queue", params=params).raise_for_status().json()
        pages, jobs, cursor = pages + 1, jobs + len(page["items"]), page["next_cursor"]
        if cursor is None:
            return time.perf_counter() - start, pages, jobs


def report(what: str, latencies: list[float], size: int) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    print(f"  {what:<32} median {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   "
          f"{size / 1024:7.1f} KiB")  # fmt: skip


def run(db: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as home:
        url, name = fresh_postgres() if db == "postgres" else (None, None)
        settings = Settings(home=Path(home), models_dir=Path(home) / "models")
        if url:  # the same settings on a throwaway Postgres database
            settings = settings.model_copy(update={"database_url": url})
        token = prepare(settings)
        job_id = seed(settings, args.queued, args.finished)
        proc, base = start_api(settings)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                timed(client, "/v1/queue", 10)  # warm up
                print(f"{db}: {args.queued} queued, 2 running, {args.finished} finished")
                report("GET /v1/queue (100 a page)", *timed(client, "/v1/queue", args.requests))
                report("GET /v1/queue?limit=500",
                       *timed(client, "/v1/queue", args.requests // 4, limit=500))  # fmt: skip
                report("GET /v1/jobs/{id} (for scale)",
                       *timed(client, f"/v1/jobs/{job_id}", args.requests))  # fmt: skip
                seconds, pages, jobs = walk(client, 500)
                print(f"  every page by cursor (500 a page): {pages} pages, {jobs} jobs "
                      f"in {seconds * 1000:.0f} ms")  # fmt: skip
        finally:
            stop(proc)
            if name:
                drop_postgres(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--queued", type=int, default=3000)
    parser.add_argument("--finished", type=int, default=7000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    for db in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        run(db, args)


if __name__ == "__main__":
    main()
