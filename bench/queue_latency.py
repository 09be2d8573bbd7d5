"""Queue latency, submit -> running, with a real worker: embedded broker and Redis.

    python -m bench.queue_latency [--broker embedded|redis|both] [--jobs 5]

Each job is cancelled as soon as it runs, so the next one measures an idle worker.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
import uuid
import zipfile
from datetime import datetime
from pathlib import Path

import httpx
from PIL import Image

from bench._stack import REDIS_URL, prepare, start, start_api, stop
from core.settings import Settings


def dataset_zip() -> bytes:
    buf = io.BytesIO()
    img = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 120, 200)).save(img, "PNG")
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("1_toy/a.png", img.getvalue())
        zf.writestr("1_toy/a.txt", "a toy")
    return buf.getvalue()


def measure(client: httpx.Client, dataset: str, jobs: int) -> list[float]:
    params = {"epoch": 100, "train_batch_size": 1, "max_resolution": "64,64",
              "network_dim": 4, "network_alpha": 4, "optimizer": "AdamW", "min_bucket_reso": 64,
              "mixed_precision": "no", "save_every_n_epochs": 0}  # fmt: skip
    latencies = []
    for _ in range(jobs):
        response = client.post(
            "/v1/jobs", json={"dataset_id": dataset, "base_model": "tiny-sdxl", "params": params}
        )
        assert response.status_code == 202, response.text
        job = response.json()
        while (current := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "queued":
            time.sleep(0.02)
        started = datetime.fromisoformat(current["started_at"])
        latencies.append((started - datetime.fromisoformat(current["created_at"])).total_seconds())
        client.post(f"/v1/jobs/{job['id']}/cancel")
        while client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running":
            time.sleep(0.1)
    return latencies


def run(kind: str, models: Path, jobs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lorabox-bench-queue-"))
    queue = f"lorabox-bench-{uuid.uuid4().hex[:6]}"
    broker = REDIS_URL if kind == "redis" else ""
    settings = Settings(home=tmp, models_dir=models, broker_url=broker, queue_name=queue)
    token = prepare(settings)
    api, url = start_api(settings)
    worker = start(["worker"], settings, tmp / "worker.log")
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            dataset = client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())})
            time.sleep(5)  # let the worker connect before the clock starts
            lat = measure(client, dataset.json()["id"], jobs)
    finally:
        stop(worker)
        stop(api)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{kind:8s} submit->running over {jobs} jobs: median {statistics.median(lat):.2f} s, "
          f"max {max(lat):.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", choices=["embedded", "redis", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    from trainer.models.tiny import write_tiny_sdxl

    models = Path(tempfile.mkdtemp(prefix="lorabox-bench-models-"))
    try:
        write_tiny_sdxl(models)
        for kind in ("embedded", "redis") if args.broker == "both" else (args.broker,):
            run(kind, models, args.jobs)
    finally:
        shutil.rmtree(models, ignore_errors=True)


if __name__ == "__main__":
    main()
