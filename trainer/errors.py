"""Typed trainer errors.

Each error carries a stable ``code`` that the service stores on the job, and a
message a user can act on. The worker maps them once; nothing else inspects
exception text.
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base class: something the user can fix, reported with a reason."""

    code = "trainer_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidDatasetError(TrainerError):
    """No images, an unreadable image, a caption that is not UTF-8, ..."""

    code = "invalid_dataset"


class BaseModelError(TrainerError):
    """The base model is missing, corrupt, or in a refused format."""

    code = "base_model_missing"


class NonFiniteLossError(TrainerError):
    """The loss became NaN or infinite; training stopped at that step."""

    code = "nan_loss"

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class NonFiniteLatentError(TrainerError):
    """The VAE produced NaN/inf latents (the SDXL VAE does so in fp16)."""

    code = "nan_loss"


class OutOfMemoryError(TrainerError):
    """CUDA ran out of memory; the message names the settings that reduce it."""

    code = "cuda_oom"


class DiskFullError(TrainerError):
    """A file could not be written because the disk is full."""

    code = "disk_full"


class ResumeStateError(TrainerError):
    """A training state that can't be read, or was saved by a different run."""

    code = "invalid_resume_state"


class TrainingCancelled(Exception):  # noqa: N818 - a control-flow signal, not a failure
    """Raised when the host asked to discard the run (cancel)."""


class TrainingSuspended(Exception):  # noqa: N818 - a control-flow signal, not a failure
    """Raised after the host asked to suspend and the training state was saved.

    ``state`` names the saved state file (None when nothing had trained yet)."""

    def __init__(self, state: str | None, step: int) -> None:
        super().__init__(f"suspended at step {step}")
        self.state = state
        self.step = step
