"""TensorBoard event files, written in the trainer's process from the trainer's own events.

The trainer library stays free of TensorBoard: this is one more reporter beside the relay.
A failure here (a missing package, a full disk) costs the charts, never the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.hooks import ArtifactSaved, EpochCompleted, Event, StepCompleted

log = logging.getLogger(__name__)
TENSORBOARD_DIR = "tensorboard"


class TensorBoardReporter:
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

    def __call__(self, event: Event) -> None:
        if not isinstance(event, StepCompleted | EpochCompleted):
            return
        writer = self._open()
        if writer is None:
            return
        try:
            if isinstance(event, StepCompleted):
                writer.add_scalar("loss/current", event.loss, event.step)
                writer.add_scalar("loss/average", event.avg_loss, event.step)
                for group, value in event.lr.items():
                    writer.add_scalar(f"lr/{group}", value, event.step)
                writer.add_scalar("speed/samples_per_s", event.samples_per_s, event.step)
            else:
                writer.add_scalar("loss/epoch", event.avg_loss, event.epoch)
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
