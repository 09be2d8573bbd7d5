"""What one play of the queue costs (core/jobs/play.py: play_queue), the work every queue
change and reconciler pass does before it writes the positions and forecasts that polls read.

    python -m bench.forecast_play [--queued 3000] [--workers 1] [--repeat 5]

Three users' jobs of equal size on ``--workers`` idle CPU workers, under ``fair`` and
``fifo``, once without quotas and once with the first user over a quota whose window frees
part-way through the play (their jobs wait, run one at a time as it frees, and are played
with every run added to their window). Prints the median time of ``--repeat`` plays.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.jobs.play import Policy, play_queue
from core.jobs.quotas import Quota
from core.jobs.schedule import Standing
from core.workers import WorkerInfo

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
GIB = 2**30
ESTIMATE = {"peak_vram_bytes": GIB, "step_flops": 10**12, "total_s": 0.0,
            "workload": {"steps": 50, "samples": 0, "saves": 0}}  # fmt: skip


@dataclass(frozen=True)
class Queued:
    """A queued row as the play reads it (tests/core/test_quota_forecast.py plays these too)."""

    id: str
    owner_id: int
    created_at: datetime
    estimate: dict[str, Any]
    priority: str = "normal"
    held: bool = False


def cpu_worker(name: str = "cpu") -> WorkerInfo:
    """An idle counted CPU worker (1 TFLOP/s probed, 30% efficient, 64 GiB)."""
    return WorkerInfo(
        key=f"host:{name}", name=name, host="host", gpu_name=None, gpu_uuid=None,
        total_memory_bytes=64 * GIB, free_memory_bytes=64 * GIB, compute_capability=None,
        torch_version=None, cuda_version=None, peak_flops=1e12, peak_source="probe",
        efficiency=0.3, allowances_s={}, state="idle", current_job_id=None, seen_at=NOW,
        device="cpu",
    )  # fmt: skip


def play_ms(queued: int, workers: int, scheduler: str, quota: bool, repeat: int) -> float:
    jobs = [Queued(f"j{i}", i % 3, NOW + timedelta(seconds=i / 10), ESTIMATE)
            for i in range(queued)]  # fmt: skip
    # 1,000 s a day, 1,500 s of it used until 500 s ago: user 0 waits until the window frees.
    quotas = {
        0: Quota(1000.0, 86400.0, ((NOW - timedelta(seconds=2000), NOW - timedelta(seconds=500)),))
    }
    standing = Standing(now=NOW, quotas=quotas if quota else {},
                        over_quota=frozenset(quotas) if quota else frozenset())  # fmt: skip
    policy = Policy(scheduler, 86400.0, standing)  # type: ignore[arg-type]  # a Scheduler
    lanes = [cpu_worker(f"w{i}") for i in range(workers)]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        play_queue(jobs, [], lanes, now=NOW, headroom_bytes=0, paused=False, policy=policy)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queued", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for quota in (False, True):
        for scheduler in ("fair", "fifo"):
            ms = play_ms(args.queued, args.workers, scheduler, quota, args.repeat)
            label = "one user over quota" if quota else "no quotas"
            print(f"{args.queued} queued, {args.workers} worker(s), {scheduler:4s}, "
                  f"{label:19s}: {ms:7.1f} ms per play", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
