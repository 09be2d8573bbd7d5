"""Where the training loop stands: steps done, the next batch, the loss window.

The loop advances it; a saved training state stores it, so a resumed run picks
up at the same batch of the same epoch order with the same ``avr_loss`` window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trainer.data.batches import Batch


@dataclass
class LossRecorder:
    """Kohya's ``avr_loss``: the mean of the last epoch's worth of micro-step losses."""

    losses: list[float] = field(default_factory=list)

    def add(self, epoch: int, index: int, loss: float) -> float:
        if epoch == 1 or index >= len(self.losses):
            self.losses.append(loss)
        else:
            self.losses[index] = loss
        return self.average()

    def average(self) -> float:
        return sum(self.losses) / len(self.losses) if self.losses else math.nan


@dataclass
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 1  # the epoch the next batch belongs to
    next_batch: int = 0  # index of the next batch in ``order``
    order: list[Batch] | None = None  # this epoch's batches; None until the epoch starts
    recorder: LossRecorder = field(default_factory=LossRecorder)
