"""The loss chart as a PNG: raw loss, its moving average, the learning rate on a second axis."""

from __future__ import annotations

import io
from collections.abc import Sequence

from core.watch.series import Point

# Colours that stay apart for colour-blind readers (Okabe-Ito).
RAW, SMOOTH, LR_COLOURS = "#999999", "#0072B2", ("#D55E00", "#009E73", "#CC79A7", "#E69F00")


def loss_png(points: Sequence[Point], *, title: str, width_px: int = 900) -> bytes:
    # Figure + Agg canvas, not pyplot: pyplot keeps global state and the route runs in a
    # thread pool.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    dpi = 100
    figure = Figure(figsize=(width_px / dpi, width_px * 0.45 / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    loss_axis = figure.add_subplot()
    steps = [p.step for p in points]
    loss_axis.plot(steps, [p.loss for p in points], color=RAW, linewidth=0.8, label="loss")
    loss_axis.plot(
        steps, [p.avg_loss for p in points], color=SMOOTH, linewidth=1.8, label="moving average"
    )
    loss_axis.set_xlabel("step")
    # Steps are whole numbers: no 1.5 on a short run's axis.
    loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axis.set_ylabel("loss")
    loss_axis.set_title(title)
    loss_axis.grid(alpha=0.3)
    lr_axis = loss_axis.twinx()
    groups = sorted({group for p in points for group in p.lr})
    for colour, group in zip(LR_COLOURS * 4, groups, strict=False):
        lr_axis.plot(
            steps,
            [p.lr.get(group, float("nan")) for p in points],
            color=colour,
            linestyle="--",
            linewidth=1.0,
            label=f"lr {group}",
        )
    lr_axis.set_ylabel("learning rate")
    lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    handles = loss_axis.get_legend_handles_labels()
    more = lr_axis.get_legend_handles_labels()
    loss_axis.legend(handles[0] + more[0], handles[1] + more[1], loc="upper right", fontsize=8)
    if not points:
        loss_axis.text(0.5, 0.5, "no steps yet", ha="center", transform=loss_axis.transAxes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
