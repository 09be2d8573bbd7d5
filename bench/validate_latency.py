"""Latency of ``POST /v1/jobs/validate`` end to end, for full-size SDXL estimates.

    python -m bench.validate_latency [--requests 20]

A real API process (SQLite, embedded broker) whose catalog holds a full-size SDXL base (a
safetensors header only: its configs are the shipped SDXL's, ``core/jobs/estimate.py``),
one counted 16 GiB worker row, and a 20-image dataset at 1024². Two payloads: the seed
(it fits: one estimate) and the seed as LyCORIS/Native Fine-Tuning (``does_not_fit``: the
estimate, then each suggestion estimated again, ``core/jobs/suggestions.py``). Prints the
median, 90th percentile and max wall time of each, as a client sees it.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import struct
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench._stack import prepare, start_api, stop
from core.db import Database
from core.db.tables import utcnow
from core.settings import Settings
from core.workers import DeviceReport
from core.workers.registry import IDLE, report_worker
from tests.factories import seed_payload

GIB = 2**30


def full_size_base(models: Path) -> None:
    """A safetensors header with one UNet key: the catalog's rule for an SDXL base."""
    header = {"model.diffusion_model.x": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}
    raw = json.dumps(header).encode()
    (models / "sdxl-full.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0")


def dataset_zip(images: int = 20) -> bytes:
    png = io.BytesIO()
    Image.new("RGB", (1024, 1024), (120, 90, 60)).save(png, "PNG")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(images):
            zf.writestr(f"10_toy/{i}.png", png.getvalue())
            zf.writestr(f"10_toy/{i}.txt", f"a toy, number {i}")
    return buffer.getvalue()


def add_worker(settings: Settings, memory_bytes: int) -> None:
    report = DeviceReport(
        key="bench-host:gpu0", name="gpu0", host="bench-host", device="cuda:0",
        gpu_name="NVIDIA GeForce RTX 4070 Ti SUPER", gpu_uuid=None,
        total_memory_bytes=memory_bytes, free_memory_bytes=memory_bytes,
        compute_capability="8.9", torch_version="2.13.0", cuda_version="12.8",
        driver_version=None, peak_flops=88e12, peak_source="table",
    )  # fmt: skip
    db = Database(settings.database_url)
    with db.writing() as session:
        report_worker(session, settings, report, state=IDLE, current_job_id=None,
                      process="bench:gpu0", started_at=utcnow())  # fmt: skip
    db.dispose()


def timed(client: httpx.Client, body: dict[str, Any], requests: int) -> tuple[list[float], Any]:
    seconds, answer = [], None
    for _ in range(requests):
        started = time.perf_counter()
        response = client.post("/v1/jobs/validate", json=body)
        seconds.append(time.perf_counter() - started)
        answer = response
    return seconds, answer


def report(name: str, seconds: list[float], response: httpx.Response) -> None:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    print(f"{name:<34} HTTP {response.status_code}  median {statistics.median(seconds) * 1e3:6.1f}"
          f" ms  p90 {p90 * 1e3:6.1f} ms  max {max(seconds) * 1e3:6.1f} ms"
          f"  (first {seconds[0] * 1e3:.1f} ms)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lorabox-bench-validate-"))
    models = home / "models"
    models.mkdir()
    full_size_base(models)
    settings = Settings(home=home, models_dir=models, broker_url="")
    token = prepare(settings)
    add_worker(settings, 16 * GIB)
    api, url = start_api(settings)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            dataset = client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())})
            dataset.raise_for_status()
            body = {"dataset_id": dataset.json()["id"], "base_model": "sdxl-full"}
            heavy = {**seed_payload(), "LoRA_type": "LyCORIS/Native Fine-Tuning"}
            for name, params in (("seed (fits)", seed_payload()),
                                 ("Native Fine-Tuning (does_not_fit)", heavy)):  # fmt: skip
                seconds, response = timed(client, {**body, "params": params}, args.requests)
                report(name, seconds, response)
    finally:
        stop(api)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
