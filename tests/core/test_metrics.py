"""Loss curves: the series is incremental, downsampling keeps extremes, the chart decodes."""

from __future__ import annotations

import io
import math
import random

import pytest
from PIL import Image

from core.watch.chart import loss_png
from core.watch.series import Point, downsample


def _series(n: int, seed: int = 0) -> list[Point]:
    rng = random.Random(seed)
    return [
        Point(step=i + 1, epoch=1 + i // 100, loss=1 / math.sqrt(i + 1) + rng.gauss(0, 0.05),
              avg_loss=1 / math.sqrt(i + 1), lr={"unet": 1e-4 * (1 - i / n)})
        for i in range(n)
    ]  # fmt: skip


def test_a_short_series_is_returned_untouched():
    points = _series(50)
    assert downsample(points, 50) == points


@pytest.mark.parametrize(("n", "max_points"), [(100_000, 400), (1001, 8), (17, 4), (5000, 999)])
def test_downsampling_keeps_the_extremes_the_ends_and_the_order(n, max_points):
    points = _series(n, seed=n)
    spike, dip = n // 3, 2 * n // 3
    points[spike] = Point(points[spike].step, 1, 50.0, 1.0, {"unet": 1e-4})
    points[dip] = Point(points[dip].step, 1, -5.0, 1.0, {"unet": 1e-4})
    kept = downsample(points, max_points)
    assert len(kept) <= max_points
    assert [p.step for p in kept] == sorted({p.step for p in kept})
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert points[spike] in kept and points[dip] in kept


def test_every_bucket_keeps_its_own_minimum_and_maximum():
    points = _series(1000, seed=3)
    kept = {p.step for p in downsample(points, 40)}  # 10 buckets of 100
    for b in range(10):
        bucket = points[b * 100 : (b + 1) * 100]
        assert min(bucket, key=lambda p: p.loss).step in kept
        assert max(bucket, key=lambda p: p.loss).step in kept


def test_the_chart_is_a_png_even_with_no_steps_yet():
    for points in (_series(300), []):
        image = Image.open(io.BytesIO(loss_png(points, title="t")))
        assert image.format == "PNG" and image.size[0] == 900 and image.size[1] > 300


@pytest.mark.slow
def test_the_series_lists_every_step_and_is_incremental(watch_stack, watched):
    url = f"/v1/jobs/{watched.job['id']}/metrics"
    total = watched.job["plan"]["total_steps"]
    full = watch_stack.get(url).json()
    assert [p["step"] for p in full["points"]] == list(range(1, total + 1))
    assert full["last_step"] == total and full["downsampled"] is False
    first = full["points"][0]
    assert first["loss"] > 0 and first["avg_loss"] > 0 and first["lr"]
    newer = watch_stack.get(url, params={"since_step": total - 2}).json()
    assert [p["step"] for p in newer["points"]] == [total - 1, total]
    nothing = watch_stack.get(url, params={"since_step": total}).json()
    assert nothing["points"] == [] and nothing["last_step"] == total


@pytest.mark.slow
def test_the_served_series_downsamples_on_request(watch_stack, watched):
    url = f"/v1/jobs/{watched.job['id']}/metrics"
    small = watch_stack.get(url, params={"max_points": 4}).json()
    assert small["downsampled"] is True and len(small["points"]) <= 4
    assert small["count"] == watched.job["plan"]["total_steps"]
    assert watch_stack.get(url, params={"max_points": 1}).status_code == 422
    assert watch_stack.get(url, user="bob").status_code == 404


@pytest.mark.slow
def test_the_loss_chart_decodes_as_a_png(watch_stack, watched):
    response = watch_stack.get(f"/v1/jobs/{watched.job['id']}/loss.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "PNG" and image.size[0] == 900
    assert len(set(image.convert("L").getdata())) > 10  # lines were drawn, not a blank canvas
