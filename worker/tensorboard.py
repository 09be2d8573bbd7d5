"""TensorBoard event files, written in the trainer's process from the trainer's own events.

The trainer library stays free of TensorBoard: this is one more reporter beside the relay.
A failure here (a missing package, a full disk) costs the charts, never the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.hooks import ArtifactSaved, EpochCompleted, Event, EventHandler, StepCompleted

log = logging.getLogger(__name__)
TENSORBOARD_DIR = "tensorboard"


class TensorBoardReporter(EventHandler):
    """Loss, moving-average loss, learning rates and speed per step; average loss per epoch."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self._writer: Any = None
        self._broken = False

    def _open(self) -> Any:
        if self._writer is None and not self._broken:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.output_dir / TENSORBOARD_DIR))
            except Exception:  # noqa: BLE001 - the charts are optional
                log.warning("TensorBoard logging is off", exc_info=True)
                self._broken = True
        return self._writer

    def on_step_completed(self, event: StepCompleted) -> None:
        lrs = {f"lr/{group}": value for group, value in event.lr.items()}
        self._add_scalars(
            event.step,
            {
                "loss/current": event.loss,
                "loss/average": event.avg_loss,
                **lrs,
                "speed/samples_per_s": event.samples_per_s,
            },
        )

    def on_epoch_completed(self, event: EpochCompleted) -> None:
        self._add_scalars(event.epoch, {"loss/epoch": event.avg_loss})

    def _add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        writer = self._open()
        if writer is None:
            return
        try:
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
        except Exception:  # noqa: BLE001
            log.warning("TensorBoard write failed; charts stop here", exc_info=True)
            self._broken = True

    def close(self, publish: Callable[[Event], None]) -> None:
        """Flushes the file and publishes it as the job's ``tensorboard`` artifact."""
        if self._writer is None:
            return
        try:
            self._writer.close()
            # Every event file in the folder: a resumed job keeps its earlier attempts' too.
            for path in sorted((self.output_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*")):
                publish(ArtifactSaved(path.relative_to(self.output_dir).as_posix(), "tensorboard"))
        except Exception:  # noqa: BLE001
            log.warning("TensorBoard file could not be published", exc_info=True)
