"""The training loop: reads top to bottom like the algorithm.

Setup lives in ``trainer.run``; the maths of one step in ``trainer.step``.
The loop only orders them: for each epoch, for each bucketed batch - poll the
stop signal, compute the loss, step the optimizer every
``gradient_accumulation_steps`` micro-steps (and at the epoch's end, as
accelerate does), report, save on Kohya's intervals - then the final save.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch

from trainer.data.batches import epoch_batches
from trainer.errors import NonFiniteLossError, TrainingCancelled, TrainingSuspended
from trainer.hooks import (
    EpochCompleted,
    PhaseChanged,
    Reporter,
    StepCompleted,
    StopSignal,
    TrainingStarted,
)
from trainer.lora.regularizers import MaxNormReport, apply_max_norm
from trainer.position import Position
from trainer.sampling.samples import sample_if_due
from trainer.saving import (
    epoch_file_name,
    epoch_state_name,
    final_file_name,
    final_state_name,
    save_checkpoint,
    save_state,
    save_step_checkpoint,
    should_save_epoch,
    should_save_step,
    step_state_name,
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


def optimizer_step(s: Session) -> MaxNormReport | None:
    """Clip, step, schedule, zero; then Kohya's max-norm regularization if asked."""
    params = [p for p in s.network.parameters() if p.requires_grad]
    s.scaler.unscale_(s.optimizer)  # clip the true gradients, not the fp16-scaled ones
    if s.config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, s.config.max_grad_norm)
    s.scaler.step(s.optimizer)  # skipped when fp16 gradients overflowed
    s.scaler.update()
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
    s: Session,
    reporter: Reporter,
    stop: StopSignal,
    step_hook: StepHook | None = None,
    position: Position | None = None,
) -> TrainingResult:
    """Train from ``position`` (a restored training state) or from the start."""
    plan, config = s.plan, s.config
    at = position or Position()
    resumed_at = at.step
    reporter(TrainingStarted(plan.total_steps, plan.epochs, plan.batches_per_epoch, at.step))
    reporter(PhaseChanged("training"))
    if s.text_encoder_stop_step is not None and at.step >= s.text_encoder_stop_step:
        freeze_text_encoders(s)
    finished_early = False
    for epoch in range(at.epoch, plan.epochs + 1):
        if at.order is None:  # a resumed state already holds its epoch's order
            at.order = epoch_batches(s.images, config.train_batch_size, s.seed, epoch)
        finished_early = train_epoch(s, reporter, stop, step_hook, at, resumed_at)
        if finished_early or at.step >= plan.total_steps and epoch < plan.epochs:
            break
        reporter(EpochCompleted(epoch, at.recorder.average()))
        at.epoch, at.next_batch, at.order = epoch + 1, 0, None
        if should_save_epoch(config.save_every_n_epochs, epoch, plan.epochs):
            reporter(PhaseChanged("saving"))
            save_checkpoint(
                s, reporter, epoch_file_name(config.output_name, epoch), at.step, epoch, False
            )
            if config.save_state:
                save_state(s, reporter, epoch_state_name(config.output_name, epoch), at, epoch)
            reporter(PhaseChanged("training"))
        sample_if_due(s, reporter, step=at.step, epoch=epoch, epoch_end=True)
    epoch = min(at.epoch, plan.epochs)
    reporter(PhaseChanged("saving"))
    final = final_file_name(config.output_name)
    save_checkpoint(s, reporter, final, at.step, epoch, final=True)
    if config.save_state or config.save_state_on_train_end:
        save_state(s, reporter, final_state_name(config.output_name), at, epoch)
    return TrainingResult(s.output_dir / final, at.step, epoch, finished_early)


def train_epoch(
    s: Session,
    reporter: Reporter,
    stop: StopSignal,
    step_hook: StepHook | None,
    at: Position,
    resumed_at: int,
) -> bool:
    """The batches of ``at.epoch`` from ``at.next_batch`` on; True when asked to finish early."""
    plan, config, batches = s.plan, s.config, at.order or []
    accumulation = config.gradient_accumulation_steps
    last = time.perf_counter()
    while at.next_batch < len(batches):
        index, batch = at.next_batch, batches[at.next_batch]
        request = stop()
        if request == "abort":
            raise TrainingCancelled()
        if request == "suspend" and index % accumulation == 0:
            suspend(s, reporter, at, resumed_at)
        if request == "finish" or at.step >= plan.total_steps:
            return request == "finish"
        if step_hook is not None:
            step_hook(at.step + 1)
        loss = training_loss(s, batch, at.epoch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(_nan_message(at.step + 1), step=at.step + 1)
        s.scaler.scale(loss / accumulation).backward()
        avg_loss = at.recorder.add(at.epoch, index, loss.item())
        at.next_batch = index + 1
        if (index + 1) % accumulation and index + 1 < len(batches):
            continue  # accumulate more micro-steps before the optimizer step
        max_norm = optimizer_step(s)
        at.step += 1
        if at.step == s.text_encoder_stop_step:
            freeze_text_encoders(s)
        now = time.perf_counter()
        samples = len(batch.images) * accumulation
        reporter(
            step_report(s, at.step, at.epoch, loss.item(), avg_loss, samples, now - last, max_norm)
        )
        if should_save_step(config.save_every_n_steps, at.step, plan.total_steps):
            reporter(PhaseChanged("saving"))
            save_step_checkpoint(s, reporter, at)
            reporter(PhaseChanged("training"))
        sample_if_due(s, reporter, step=at.step, epoch=at.epoch, epoch_end=False)
        last = time.perf_counter()  # saving and sampling don't count as step time
    return False


def suspend(s: Session, reporter: Reporter, at: Position, resumed_at: int) -> NoReturn:
    """Save the training state at this step boundary and end the run for another to resume."""
    name = None
    if at.step > resumed_at:  # otherwise the state it started from is still current
        name = step_state_name(s.config.output_name, at.step)
        reporter(PhaseChanged("saving"))
        save_state(s, reporter, name, at, at.epoch)
    raise TrainingSuspended(name, at.step)


def _peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _nan_message(step: int) -> str:
    return (
        f"the loss became NaN/inf at step {step}: lower the learning rate, keep max_grad_norm "
        "at 1, use bf16 instead of fp16 mixed precision, or check the base model's weights"
    )
