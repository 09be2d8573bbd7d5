"""How the trainer talks to its host: typed events out, a stop signal in.

The loop receives a ``Reporter`` and a ``StopSignal``; both default to null
objects so the loop never branches on "is anyone listening".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Phase = Literal["loading", "caching", "training", "saving", "sampling"]
ArtifactKind = Literal["lora", "checkpoint", "state", "sample", "tensorboard", "log"]
StopRequest = Literal["finish", "abort"]
"""``finish``: end within one step and save the final LoRA from the current
weights. ``abort``: end within one step, save nothing more (a cancel)."""


@dataclass(frozen=True)
class PhaseChanged:
    phase: Phase


@dataclass(frozen=True)
class TrainingStarted:
    total_steps: int
    total_epochs: int
    batches_per_epoch: int
    start_step: int = 0


@dataclass(frozen=True)
class StepCompleted:
    step: int  # optimizer steps done so far (1-based after the first step)
    total_steps: int
    epoch: int  # 1-based epoch the step belongs to
    total_epochs: int
    loss: float
    avg_loss: float  # Kohya's moving average over the last epoch's worth of steps
    lr: dict[str, float]  # learning rate per parameter group ("unet", "textencoder", ...)
    samples_per_s: float
    s_per_step: float
    peak_gpu_mem_bytes: int | None = None
    max_norm: dict[str, float] | None = None  # scale_weight_norms: keys_scaled, norms


@dataclass(frozen=True)
class EpochCompleted:
    epoch: int
    avg_loss: float


@dataclass(frozen=True)
class ArtifactSaved:
    path: str  # relative to the run's output directory
    kind: ArtifactKind
    epoch: int | None = None
    step: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Notice:
    """A warning worth showing the user (a fallback taken, a value adjusted)."""

    message: str
    field: str | None = None


Event = PhaseChanged | TrainingStarted | StepCompleted | EpochCompleted | ArtifactSaved | Notice


class Reporter(Protocol):
    def __call__(self, event: Event) -> None: ...


class StopSignal(Protocol):
    def __call__(self) -> StopRequest | None: ...


def null_reporter(event: Event) -> None:
    """Discards events."""


def never_stop() -> StopRequest | None:
    return None
