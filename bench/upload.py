"""Upload: receiving a large zip (MB/s, API RSS growth) and, apart, validating its images.

    python -m bench.upload [--size-mb 1024]

The zip (stored, noise PNGs) is generated on the fly in a temp dir and deleted afterwards.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from bench._stack import prepare, start_api, stop
from core.datasets.validate import check_image
from core.settings import Settings


def make_zip(path: Path, size_bytes: int, side: int = 512) -> int:
    """Noise PNGs (incompressible) until the zip reaches the size; returns the image count."""
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(32):
        buf = io.BytesIO()
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
        pool.append(buf.getvalue())
    count = 0
    written = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        while written < size_bytes:
            data = pool[count % len(pool)]
            zf.writestr(f"10_noise/{count:06d}.png", data)
            zf.writestr(f"10_noise/{count:06d}.txt", b"noise")
            written += len(data) + 200
            count += 1
    return count


class RssWatch:
    """Peak resident memory of a process tree while the upload runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.05)

    def growth_mb(self) -> float:
        self._stop.set()
        self._thread.join()
        return (self.peak - self.base) / 2**20


def upload(url: str, token: str, path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with path.open("rb") as fh:
        response = httpx.post(
            url + "/v1/datasets", headers={"Authorization": f"Bearer {token}"},
            files={"file": (path.name, fh, "application/zip")}, timeout=3600,
        )  # fmt: skip
    return response.status_code, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lorabox-bench-upload-"))
    try:
        zip_path = tmp / "big.zip"
        images = make_zip(zip_path, args.size_mb * 2**20)
        size_mb = zip_path.stat().st_size / 2**20
        junk = tmp / "junk.bin"  # same size, not a zip: measures receiving alone
        with junk.open("wb") as fh:
            for _ in range(int(size_mb)):
                fh.write(os.urandom(2**20))
        settings = Settings(home=tmp / "home", models_dir=tmp / "models",
                            max_upload_bytes=(args.size_mb + 64) * 2**20)  # fmt: skip
        token = prepare(settings)
        api, url = start_api(settings)
        try:
            watch = RssWatch(api.pid)
            status, seconds = upload(url, token, junk)
            growth = watch.growth_mb()
            print(f"receive {size_mb:.0f} MB: {size_mb / seconds:6.1f} MB/s "
                  f"(HTTP {status}), API RSS growth {growth:.1f} MB")  # fmt: skip
            watch = RssWatch(api.pid)
            status, seconds = upload(url, token, zip_path)
            growth = watch.growth_mb()
            print(
                f"full upload (receive+extract+decode {images} images): {seconds:.1f} s, "
                f"{size_mb / seconds:6.1f} MB/s (HTTP {status}), API RSS growth {growth:.1f} MB"
            )
        finally:
            stop(api)
        folder = next((settings.datasets_dir).iterdir()) / "10_noise"
        paths = sorted(folder.glob("*.png"))
        start = time.perf_counter()
        for path in paths:
            assert check_image(path, settings.max_image_pixels) is None
        seconds = time.perf_counter() - start
        print(f"validate: {len(paths) / seconds:6.1f} images/s (512x512 PNG, full decode)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
