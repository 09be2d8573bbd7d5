"""How the trainer talks to its host: typed events out, a stop signal in.

The loop receives a ``Reporter`` and a ``StopSignal``; both default to null
objects so the loop never branches on "is anyone listening".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Phase = Literal["loading", "caching", "training", "saving", "sampling"]
ArtifactKind = Literal["lora", "checkpoint", "state", "sample", "tensorboard", "log"]
StopRequest = Literal["finish", "abort", "suspend"]
"""What the host asks for; it keeps answering the same once asked. The trainer polls it
before every micro-step and, during setup, between phases (at the start, after the dataset
scan, after loading the model, after building the network, after caching) and between
latent-caching batches, so no request waits for minutes of setup; a single long call (one
model file being read) can't be interrupted, which is why the worker kills a trainer that
ignores a cancel for too long.

``finish``: end within one step and save the final LoRA from the current weights. Before the
first step that is the LoRA as it stands, trained zero steps (its initial weights, the
``network_weights`` as loaded, a resumed state's): loading and building the network still
complete, since the file needs them, but caching is skipped or cut short, as no step will
read it. (A job not started yet has no weights at all: the service cancels it instead.)
``abort``: end within one step, or at the next setup phase or caching batch, saving nothing
more (a cancel): ``TrainingCancelled``.
``suspend``: at the next optimizer-step boundary save the training state and end
(``TrainingSuspended``), so another process can resume the run exactly. During setup
nothing new exists to save: it ends at the next phase or caching batch with no state (the
one the run started from, if any, is still the one to resume)."""


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
class ArtifactRemoved:
    """A file published earlier was deleted (``save_last_n_steps`` keeps a window)."""

    path: str  # relative to the run's output directory


@dataclass(frozen=True)
class Notice:
    """A warning worth showing the user (a fallback taken, a value adjusted)."""

    message: str
    field: str | None = None


Event = (
    PhaseChanged
    | TrainingStarted
    | StepCompleted
    | EpochCompleted
    | ArtifactSaved
    | ArtifactRemoved
    | Notice
)


class Reporter(Protocol):
    def __call__(self, event: Event) -> None: ...


class EventHandler:
    """A ``Reporter`` with one method per event class, each a no-op until overridden.

    Every consumer of events (the CLI's printer, the worker's relay, TensorBoard) subclasses
    this and overrides what it handles, so the mapping from event class to code lives once,
    in ``_DISPATCH``: a new event class is its dataclass, its place in ``Event``, and its
    entry there (a test fails while one is missing).
    """

    def on_phase_changed(self, event: PhaseChanged) -> None: ...
    def on_training_started(self, event: TrainingStarted) -> None: ...
    def on_step_completed(self, event: StepCompleted) -> None: ...
    def on_epoch_completed(self, event: EpochCompleted) -> None: ...
    def on_artifact_saved(self, event: ArtifactSaved) -> None: ...
    def on_artifact_removed(self, event: ArtifactRemoved) -> None: ...
    def on_notice(self, event: Notice) -> None: ...

    def dispatch(self, event: Event) -> None:
        method = _DISPATCH.get(type(event))
        if method is None:  # an event class added without its entry below
            raise TypeError(f"no handler method for {type(event).__name__}")
        method(self, event)

    __call__ = dispatch  # a handler is passed wherever a Reporter is expected


# Lambdas, not the functions themselves, so a subclass's override is the one called.
_DISPATCH: dict[type[Event], Callable[[EventHandler, Any], None]] = {
    PhaseChanged: lambda handler, event: handler.on_phase_changed(event),
    TrainingStarted: lambda handler, event: handler.on_training_started(event),
    StepCompleted: lambda handler, event: handler.on_step_completed(event),
    EpochCompleted: lambda handler, event: handler.on_epoch_completed(event),
    ArtifactSaved: lambda handler, event: handler.on_artifact_saved(event),
    ArtifactRemoved: lambda handler, event: handler.on_artifact_removed(event),
    Notice: lambda handler, event: handler.on_notice(event),
}


class StopSignal(Protocol):
    def __call__(self) -> StopRequest | None: ...


def null_reporter(event: Event) -> None:
    """Discards events."""


def never_stop() -> StopRequest | None:
    return None
