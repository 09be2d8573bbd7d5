"""A mixed workload on one CPU worker under `fifo` and `fair` (docs/scheduling.md).

    python -m bench.fair_share [--unit-steps 4] [--schedulers fifo,fair] [--warm-up 0]

Ten jobs of the miniature SDXL from three users, sizes 1 to 5 units of ``--unit-steps``
steps: ``heavy`` queues five big ones first, then ``medium`` three, then ``light`` two small
ones, all before the first has finished. Prints each user's mean wait (submission to start)
under each scheduler, and how far the forecast start stored right after the last submission
(``estimated_start_at``) was from the real start: median and largest absolute error.

``--warm-up N`` first runs N jobs of a fourth user to the end, so the worker has learned its
efficiency and allowances from finished runs (core/workers/model.py) as a box that has run
jobs before has: the forecast error then is the time model's, not its defaults' (a fresh
worker assumes 60 s of loading per job; the miniature loads in about a second).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench._stack import prepare, start, start_api, stop
from bench.queue_latency import dataset_zip
from core.db import Database
from core.settings import Settings
from core.users import add_user
from core.workers import counted_workers

# (user, size in units), in submission order.
WORKLOAD = [("heavy", 5), ("heavy", 4), ("heavy", 5), ("heavy", 3), ("heavy", 4),
            ("medium", 2), ("medium", 3), ("medium", 1), ("light", 1), ("light", 2)]  # fmt: skip


def _params(steps: int) -> dict[str, Any]:
    return {"epoch": steps, "train_batch_size": 1, "max_resolution": "64,64",
            "network_dim": 4, "network_alpha": 4, "optimizer": "AdamW", "min_bucket_reso": 64,
            "mixed_precision": "no", "save_every_n_epochs": 0}  # fmt: skip


def _wait_for_worker(settings: Settings) -> None:
    db = Database(settings.database_url, pool_size=1)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with db.reading() as session:
                if counted_workers(session, settings):
                    return
            time.sleep(0.5)
        raise RuntimeError("the worker never reported")
    finally:
        db.dispose()


def _finish(client: httpx.Client, job_id: str) -> dict[str, Any]:
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        time.sleep(0.5)
    assert job["status"] == "succeeded", job
    return dict(job)


def run(scheduler: str, models: Path, unit_steps: int, warm_up: int = 0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="lorabox-bench-fair-"))
    os.environ["LORABOX_SCHEDULER"] = scheduler  # the API's forecast and the worker's claim
    settings = Settings(home=tmp, models_dir=models, queue_name=f"fair-{uuid.uuid4().hex[:6]}")
    prepare(settings)
    db = Database(settings.database_url, pool_size=1)
    with db.writing() as session:
        tokens = {name: add_user(session, name=name)
                  for name in ("heavy", "medium", "light", "warm-up")}  # fmt: skip
    db.dispose()
    api, url = start_api(settings)
    worker = start(["worker"], settings, tmp / "worker.log")
    try:
        _wait_for_worker(settings)
        clients = {n: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {t}"},
                                   timeout=60) for n, t in tokens.items()}  # fmt: skip
        datasets = {n: c.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())}).json()["id"]
                    for n, c in clients.items()}  # fmt: skip
        for i in range(warm_up):  # sizes 1 to 4 units: the learning sees steps vary
            body = {"dataset_id": datasets["warm-up"], "base_model": "tiny-sdxl",
                    "params": _params((1 + i % 4) * unit_steps)}  # fmt: skip
            _finish(clients["warm-up"], clients["warm-up"].post("/v1/jobs", json=body).json()["id"])
        jobs = []
        for user, size in WORKLOAD:
            body = {"dataset_id": datasets[user], "base_model": "tiny-sdxl",
                    "params": _params(size * unit_steps)}  # fmt: skip
            response = clients[user].post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            jobs.append((user, response.json()["id"]))
        forecast = {j: clients[u].get(f"/v1/jobs/{j}").json()["estimated_start_at"]
                    for u, j in jobs}  # fmt: skip
        done = {job_id: _finish(clients[user], job_id) for user, job_id in jobs}
    finally:
        stop(worker)
        stop(api)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"jobs": jobs, "done": done, "forecast": forecast}


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds()


def report(scheduler: str, result: dict[str, Any]) -> None:
    waits: dict[str, list[float]] = {}
    errors = []
    for user, job_id in result["jobs"]:
        job = result["done"][job_id]
        waits.setdefault(user, []).append(_seconds(job["started_at"], job["created_at"]))
        if (predicted := result["forecast"][job_id]) is not None:
            errors.append(abs(_seconds(job["started_at"], predicted)))
    means = "  ".join(f"{u} {statistics.mean(w):6.1f} s" for u, w in waits.items())
    # The box's speed varies between runs (a shared CI host): the whole run's length says how.
    jobs = result["done"].values()
    first = min(datetime.fromisoformat(j["created_at"]) for j in jobs)
    makespan = (max(datetime.fromisoformat(j["finished_at"]) for j in jobs) - first).total_seconds()
    error = (f"median {statistics.median(errors):.1f} s, max {max(errors):.1f} s "
             f"over {len(errors)} jobs") if errors else "no forecasts"  # fmt: skip
    print(f"{scheduler:5s} mean wait: {means}   all done in {makespan:.0f} s   "
          f"forecast start error: {error}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unit-steps", type=int, default=4)
    parser.add_argument("--schedulers", default="fifo,fair")
    parser.add_argument("--warm-up", type=int, default=0, help="jobs run before the workload")
    args = parser.parse_args()
    from trainer.models.tiny import write_tiny_sdxl

    models = Path(tempfile.mkdtemp(prefix="lorabox-bench-models-"))
    try:
        write_tiny_sdxl(models)
        for scheduler in args.schedulers.split(","):
            report(scheduler, run(scheduler, models, args.unit_steps, args.warm_up))
    finally:
        shutil.rmtree(models, ignore_errors=True)


if __name__ == "__main__":
    main()
