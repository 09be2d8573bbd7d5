"""SSE: N open event streams on one API process; prints its memory growth.

python -m bench.sse_streams [--streams 50] [--seconds 20] [--db sqlite|postgres]

One running job gets a progress entry every 0.2 s (as a worker writes them); every stream
must receive all of them. Target: API RSS growth < 50 MB for 50 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench._stack import drop_postgres, fresh_postgres, prepare, start_api, stop
from core.db import Database, Job, JobEvent, User
from core.settings import Settings

PLAN = {"total_steps": 10_000, "batches_per_epoch": 100, "epochs": 100, "warmup_steps": 0,
        "images_x_repeats": 100, "buckets": [], "warnings": []}  # fmt: skip


def seed_job(db: Database) -> str:
    with db.writing() as session:
        user_id = session.query(User.id).first()[0]
        job = Job(owner_id=user_id, base_model="m", dataset_id="d", params={}, config={},
                  resolved={}, plan=PLAN, status="running", attempt=1)  # fmt: skip
        session.add(job)
        session.flush()
        return job.id


def write_progress(db: Database, job_id: str, stop_at: float, interval_s: float = 0.2) -> int:
    step = 0
    while time.monotonic() < stop_at:
        step += 1
        with db.writing() as session:
            data = {"phase": "training", "step": step, "total_steps": 10_000, "loss": 0.1}
            session.add(JobEvent(job_id=job_id, attempt=1, kind="progress", data=data))
        time.sleep(interval_s)
    with db.writing() as session:
        session.get(Job, job_id).status = "succeeded"  # type: ignore[union-attr]
        session.add(JobEvent(job_id=job_id, attempt=1, kind="finished", data={"status": "ok"}))
    return step


async def one_stream(client: httpx.AsyncClient, url: str, counts: list[int], i: int) -> None:
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("event: progress"):
                counts[i] += 1


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    total = process.memory_info().rss + sum(
        c.memory_info().rss for c in process.children(recursive=True)
    )
    return total / 2**20


async def run(
    url: str, token: str, job_id: str, pid: int, db_url: str, streams: int, seconds: float
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=streams + 5)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None, limits=limits) as c:
        for _ in range(20):  # warm up: imports, pools, the auth cache
            await c.get(f"/v1/jobs/{job_id}")
        before = rss_mb(pid)
        counts = [0] * streams
        stop_at = time.monotonic() + seconds
        db = Database(db_url, pool_size=1)
        written: list[int] = []
        writer = threading.Thread(
            target=lambda: written.append(write_progress(db, job_id, stop_at))
        )
        writer.start()
        tasks = [asyncio.create_task(one_stream(c, f"/v1/jobs/{job_id}/events", counts, i))
                 for i in range(streams)]  # fmt: skip
        peak = before
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_mb(pid))
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        writer.join()
        db.dispose()
    print(f"streams: {streams} open for {seconds:.0f} s; progress entries written: {written[0]}")
    print(f"events received per stream: min {min(counts)}, max {max(counts)}")
    print(f"API RSS: {before:.1f} MB before, peak {peak:.1f} MB with the streams open")
    print(f"API RSS growth: {peak - before:.1f} MB (target < 50 MB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lorabox-bench-") as tmp:
        pg_name = None
        url = ""
        if args.db == "postgres":
            url, pg_name = fresh_postgres()
        settings = Settings(home=Path(tmp), models_dir=Path(tmp) / "models", database_url=url)
        token = prepare(settings)
        db = Database(settings.database_url, pool_size=1)
        job_id = seed_job(db)
        db.dispose()
        api, api_url = start_api(settings)
        try:
            print(f"database: {args.db}")
            asyncio.run(
                run(api_url, token, job_id, api.pid, settings.database_url, args.streams,
                    args.seconds)
            )  # fmt: skip
        finally:
            stop(api)
            if pg_name:
                drop_postgres(pg_name)


if __name__ == "__main__":
    main()
