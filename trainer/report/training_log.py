"""The training's own log: what a user reads in ``train.log`` (``lorabox logs``).

Built from the events the trainer already reports (``trainer.hooks``), so the loop stays
free of prints: one timestamped line per phase, the plan and the settings that shape it,
a step line at an interval (the first, every ``STEP_EVERY`` steps or ``SECONDS_EVERY``
seconds, whichever comes first, and the last), each epoch, each saved file and sample,
each warning, and a summary at the end. The step line carries what sd-scripts' progress
bar shows (``train_network.py``: ``avr_loss`` and the learning rates in the postfix) plus
s/step and the time left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from trainer.hooks import (
    ArtifactRemoved,
    ArtifactSaved,
    EpochCompleted,
    EventHandler,
    Notice,
    PhaseChanged,
    StepCompleted,
    TrainingStarted,
)
from trainer.job import TrainingJob
from trainer.report.quiet import KnownNoise

STEP_EVERY = 10
SECONDS_EVERY = 10.0
PHASES = {
    "loading": "loading the base model, the dataset and the network",
    "caching": "caching latents / text-encoder outputs",
    "training": "training",
    "saving": "saving",
    "sampling": "sampling",
}
LOGGER = "train"


def duration(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _megabytes(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 1e6:.1f} MB"
    except OSError:
        return "size unknown"


class TrainingLog(EventHandler):
    """Writes a job's events to ``logger`` as the lines of its training log."""

    def __init__(
        self,
        job: TrainingJob,
        noise: KnownNoise | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self.noise = noise
        self.log = logger or logging.getLogger(LOGGER)
        self.clock = clock
        self.started = self.clock()
        self.training_at: float | None = None
        self.phase: str | None = None
        self.last_logged: tuple[int, float] = (0, 0.0)
        self.first_step = 1
        self.last_step: StepCompleted | None = None
        self.saved: dict[str, int] = {}
        self.warnings = 0

    def begin(self) -> None:
        self.log.info(
            "job: base model %s, files named %s*.safetensors",
            self.job.base_model.name, self.job.config.output_name,
        )  # fmt: skip

    def on_phase_changed(self, event: PhaseChanged) -> None:
        # The loop returns to "training" after each save and sample: said once.
        back = event.phase == "training" and self.phase in ("saving", "sampling")
        if event.phase != self.phase and not back:
            self.log.info("phase: %s", PHASES.get(event.phase, event.phase))
        self.phase = event.phase

    def on_training_started(self, event: TrainingStarted) -> None:
        self.training_at = self.clock()
        self.first_step = event.start_step + 1
        self.last_logged = (event.start_step, self.training_at)
        config, plan = self.job.config, self.job.plan
        self.log.info(
            "plan: %d steps over %d epochs, %d batches of %d per epoch, gradient accumulation %d",
            event.total_steps, event.total_epochs, event.batches_per_epoch,
            config.train_batch_size, config.gradient_accumulation_steps,
        )  # fmt: skip
        if plan is not None:
            buckets = ", ".join(f"{b.resolution[0]}x{b.resolution[1]}: {b.count}"
                                for b in plan.buckets)  # fmt: skip
            self.log.info(
                "plan: %d images x repeats in %d bucket(s) (%s); %d warmup steps",
                plan.images_x_repeats, len(plan.buckets), buckets, plan.warmup_steps,
            )  # fmt: skip
        self.log.info(
            "settings: %s dim %d alpha %g, %s, lr unet %.2e text encoders %.2e, %s schedule, "
            "mixed precision %s, resolution %dx%d, seed %s",
            config.lora_type, config.network_dim, config.network_alpha, config.optimizer,
            config.unet_lr, config.text_encoder_lr, config.lr_scheduler, config.mixed_precision,
            *config.resolution, "random" if config.seed is None else config.seed,
        )  # fmt: skip
        if event.start_step:
            self.log.info("resuming at step %d of %d", event.start_step, event.total_steps)

    def _due(self, event: StepCompleted) -> bool:
        step, at = self.last_logged
        now = self.clock()
        return (
            event.step in (self.first_step, event.total_steps)
            or event.step - step >= STEP_EVERY
            or now - at >= SECONDS_EVERY
        )

    def on_step_completed(self, event: StepCompleted) -> None:
        self.last_step = event
        if not self._due(event):
            return
        self.last_logged = (event.step, self.clock())
        rates = " ".join(f"{group} {rate:.2e}" for group, rate in event.lr.items())
        left = (event.total_steps - event.step) * event.s_per_step
        memory = (
            f", peak GPU memory {event.peak_gpu_mem_bytes / 2**30:.2f} GiB"
            if event.peak_gpu_mem_bytes
            else ""
        )
        self.log.info(
            "step %d/%d epoch %d/%d loss %.4f avg %.4f lr %s | %.2f s/step, %s left%s",
            event.step, event.total_steps, event.epoch, event.total_epochs, event.loss,
            event.avg_loss, rates, event.s_per_step, duration(left), memory,
        )  # fmt: skip

    def on_epoch_completed(self, event: EpochCompleted) -> None:
        total = self.last_step.total_epochs if self.last_step else "?"
        self.log.info("epoch %d/%s done: avg loss %.4f", event.epoch, total, event.avg_loss)

    def on_artifact_saved(self, event: ArtifactSaved) -> None:
        self.saved[event.kind] = self.saved.get(event.kind, 0) + 1
        where = f" (epoch {event.epoch}, step {event.step})" if event.step is not None else ""
        if event.kind == "sample":
            prompt = event.metadata.get("prompt", "")
            self.log.info("sample: %s%s, prompt %r", event.path, where, prompt)
            return
        size = _megabytes(self.job.output_dir / event.path)
        self.log.info("saved %s: %s%s, %s", event.kind, event.path, where, size)

    def on_artifact_removed(self, event: ArtifactRemoved) -> None:
        self.log.info("removed %s (only the newest are kept)", event.path)

    def on_notice(self, event: Notice) -> None:
        self.warnings += 1
        where = f"{event.field}: " if event.field else ""
        self.log.warning("%s%s", where, event.message)

    def _hidden(self) -> None:
        summary = self.noise.summary() if self.noise is not None else None
        if summary:
            self.log.info("%s", summary)

    def finished(self, steps: int, epochs: int, stopped_early: bool, lora: Path) -> None:
        """The summary of a run that ended with its LoRA."""
        self._hidden()
        trained = self.clock() - (self.training_at or self.started)
        done_steps = max(steps - self.first_step + 1, 0)
        rate = f", {trained / done_steps:.2f} s/step" if done_steps else ""
        loss = f", last avg loss {self.last_step.avg_loss:.4f}" if self.last_step else ""
        files = ", ".join(f"{n} {kind}" for kind, n in sorted(self.saved.items()))
        how = "stopped early" if stopped_early else "done"
        self.log.info(
            "%s: %d steps, %d epochs in %s (training %s%s)%s; LoRA %s; files: %s; %d warning(s)",
            how, steps, epochs, duration(self.clock() - self.started), duration(trained), rate,
            loss, lora.name, files or "none", self.warnings,
        )  # fmt: skip

    def ended(self, outcome: str, message: str = "") -> None:
        """The summary of a run that ended without its LoRA: cancelled, suspended, failed."""
        self._hidden()
        last = self.last_step
        at = f" at step {last.step}/{last.total_steps}" if last else ""
        text = f"{outcome}{at} after {duration(self.clock() - self.started)}"
        if outcome == "failed":
            self.log.error("%s: %s", text, message)
        else:
            self.log.info("%s%s", text, f": {message}" if message else "")
