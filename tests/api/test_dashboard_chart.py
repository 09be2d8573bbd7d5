"""The dashboard's loss chart (GET /v1/jobs/{id}/loss.png, core/watch/chart.py): a short run's
step axis is labelled with whole steps only (it read 1.5, 2.5 before)."""

from __future__ import annotations

import io

import pytest
from matplotlib.figure import Figure
from PIL import Image

from core.watch.chart import loss_png
from core.watch.series import Point


@pytest.mark.parametrize("last_step", [2, 3, 7])
def test_the_step_axis_has_whole_steps_only(monkeypatch, last_step):
    drawn: list[Figure] = []
    savefig = Figure.savefig

    def keep(figure: Figure, *args, **kwargs):  # the figure as it is written out
        drawn.append(figure)
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    points = [Point(step=s, epoch=1, loss=1 / s, avg_loss=1 / s, lr={"unet": 1e-4})
              for s in range(1, last_step + 1)]  # fmt: skip
    png = loss_png(points, title="short run")

    assert Image.open(io.BytesIO(png)).format == "PNG"
    [figure] = drawn
    ticks = [t for t in figure.axes[0].get_xticks() if 1 <= t <= last_step]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
