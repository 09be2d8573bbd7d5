"""The training loop: reads top to bottom like the algorithm.

Setup lives in ``trainer.run``; the maths of one step in ``trainer.step``.
The loop only orders them: for each epoch, for each bucketed batch - poll the
stop signal, compute the loss, step the optimizer every
``gradient_accumulation_steps`` micro-steps (and at the epoch's end, as
accelerate does), report, save on Kohya's intervals - then the final save.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.data.batches import epoch_batches
from trainer.errors import NonFiniteLossError, TrainingCancelled
from trainer.hooks import (
    EpochCompleted,
    PhaseChanged,
    Reporter,
    StepCompleted,
    StopSignal,
    TrainingStarted,
)
from trainer.lora.regularizers import MaxNormReport, apply_max_norm
from trainer.saving import (
    epoch_file_name,
    final_file_name,
    save_checkpoint,
    save_step_checkpoint,
    should_save_epoch,
    should_save_step,
)
from trainer.session import Session
from trainer.step import training_loss

StepHook = Callable[[int], None]


@dataclass(frozen=True)
class TrainingResult:
    lora_path: Path
    steps: int
    epochs: int
    stopped_early: bool


class LossRecorder:
    """Kohya's ``avr_loss``: the mean of the last epoch's worth of micro-step losses."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def add(self, epoch: int, index: int, loss: float) -> float:
        if epoch == 1 or index >= len(self.losses):
            self.losses.append(loss)
        else:
            self.losses[index] = loss
        return self.average()

    def average(self) -> float:
        return sum(self.losses) / len(self.losses) if self.losses else math.nan


def optimizer_step(s: Session) -> MaxNormReport | None:
    """Clip, step, schedule, zero; then Kohya's max-norm regularization if asked."""
    params = [p for p in s.network.parameters() if p.requires_grad]
    if s.scaler is not None:
        s.scaler.unscale_(s.optimizer)
    if s.config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, s.config.max_grad_norm)
    if s.scaler is not None:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    if s.config.scale_weight_norms:
        return apply_max_norm(s.network, s.config.scale_weight_norms)
    return None


def freeze_text_encoders(s: Session) -> None:
    """stop_text_encoder_training_pct: the text-encoder LoRA keeps its weights from here on."""
    for parameter in s.network.parameters("textencoder"):
        parameter.requires_grad_(False)
        parameter.grad = None
    s.train_text_encoder = False


def current_lrs(s: Session) -> dict[str, float]:
    return {
        name: float(group["lr"] if group["lr"] is not None else s.scheduler.get_last_lr()[i])
        for i, (name, group) in enumerate(zip(s.group_names, s.optimizer.param_groups, strict=True))
    }


def step_report(
    s: Session,
    step: int,
    epoch: int,
    loss: float,
    avg_loss: float,
    samples: int,
    seconds: float,
    max_norm: MaxNormReport | None = None,
) -> StepCompleted:
    return StepCompleted(
        step=step,
        total_steps=s.plan.total_steps,
        epoch=epoch,
        total_epochs=s.plan.epochs,
        loss=loss,
        avg_loss=avg_loss,
        lr=current_lrs(s),
        samples_per_s=samples / seconds,
        s_per_step=seconds,
        peak_gpu_mem_bytes=_peak_memory(s.device),
        max_norm=max_norm.as_log() if max_norm is not None else None,
    )


def run_training(
    s: Session, reporter: Reporter, stop: StopSignal, step_hook: StepHook | None = None
) -> TrainingResult:
    plan, config = s.plan, s.config
    accumulation = config.gradient_accumulation_steps
    reporter(TrainingStarted(plan.total_steps, plan.epochs, plan.batches_per_epoch))
    reporter(PhaseChanged("training"))
    recorder, step, epoch, finished_early = LossRecorder(), 0, 0, False
    last = time.perf_counter()
    if s.text_encoder_stop_step == 0:
        freeze_text_encoders(s)
    for epoch in range(1, plan.epochs + 1):
        batches = epoch_batches(s.images, config.train_batch_size, s.seed, epoch)
        for index, batch in enumerate(batches):
            request = stop()
            if request == "abort":
                raise TrainingCancelled()
            if request == "finish" or step >= plan.total_steps:
                finished_early = request == "finish"
                break
            if step_hook is not None:
                step_hook(step + 1)
            loss = training_loss(s, batch, epoch)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(_nan_message(step + 1), step=step + 1)
            scaled = loss / accumulation
            (s.scaler.scale(scaled) if s.scaler is not None else scaled).backward()
            avg_loss = recorder.add(epoch, index, loss.item())
            if (index + 1) % accumulation and index + 1 < len(batches):
                continue  # accumulate more micro-steps before the optimizer step
            max_norm = optimizer_step(s)
            step += 1
            if step == s.text_encoder_stop_step:
                freeze_text_encoders(s)
            now = time.perf_counter()
            samples = len(batch.images) * accumulation
            reporter(
                step_report(s, step, epoch, loss.item(), avg_loss, samples, now - last, max_norm)
            )
            last = now
            if should_save_step(config.save_every_n_steps, step, plan.total_steps):
                save_step_checkpoint(s, reporter, step, epoch)
        if finished_early or step >= plan.total_steps and epoch < plan.epochs:
            break
        reporter(EpochCompleted(epoch, recorder.average()))
        if should_save_epoch(config.save_every_n_epochs, epoch, plan.epochs):
            reporter(PhaseChanged("saving"))
            name = epoch_file_name(config.output_name, epoch)
            save_checkpoint(s, reporter, name, step, epoch, final=False)
            reporter(PhaseChanged("training"))
    reporter(PhaseChanged("saving"))
    final = final_file_name(config.output_name)
    save_checkpoint(s, reporter, final, step, epoch, final=True)
    return TrainingResult(s.output_dir / final, step, epoch, finished_early)


def _peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _nan_message(step: int) -> str:
    return (
        f"the loss became NaN/inf at step {step}: lower the learning rate, keep max_grad_norm "
        "at 1, use bf16 instead of fp16 mixed precision, or check the base model's weights"
    )
