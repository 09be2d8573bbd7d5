"""Kohya's file names and the saves of LoRA files and training states.

Names as sd-scripts ``library/train_util.py`` makes them (``get_epoch_ckpt_name``,
``get_step_ckpt_name``, ``get_last_ckpt_name``, and ``EPOCH_STATE_NAME``,
``STEP_STATE_NAME``, ``LAST_STATE_NAME`` for states). A training state is one
``.safetensors`` file named like Kohya's state folders (``<name>-<epoch>-state``,
``<name>-step<step>-state``, ``<name>-state``).
"""

from __future__ import annotations

import time

from trainer.hooks import ArtifactKind, ArtifactRemoved, ArtifactSaved, Reporter
from trainer.lora.kohya_file import save_lora
from trainer.position import Position
from trainer.session import Session
from trainer.state.training_state import save_training_state


def epoch_file_name(output_name: str, epoch: int) -> str:
    return f"{output_name}-{epoch:06d}.safetensors"


def step_file_name(output_name: str, step: int) -> str:
    return f"{output_name}-step{step:08d}.safetensors"


def final_file_name(output_name: str) -> str:
    return f"{output_name}.safetensors"


def epoch_state_name(output_name: str, epoch: int) -> str:
    return f"{output_name}-{epoch:06d}-state.safetensors"


def step_state_name(output_name: str, step: int) -> str:
    return f"{output_name}-step{step:08d}-state.safetensors"


def final_state_name(output_name: str) -> str:
    return f"{output_name}-state.safetensors"


def should_save_epoch(every: int | None, epoch: int, total_epochs: int) -> bool:
    """After epoch e when e % n == 0, except the last (the final file covers it)."""
    return bool(every) and epoch % every == 0 and epoch < total_epochs  # type: ignore[operator]


def should_save_step(every: int | None, step: int, total_steps: int) -> bool:
    """After optimizer step s when s % n == 0, except the last (the final file covers it)."""
    return bool(every) and step % every == 0 and step < total_steps  # type: ignore[operator]


def step_to_remove(step: int, every: int | None, last_n: int | None) -> int | None:
    """The older step file ``save_last_n_steps`` drops after saving at ``step``
    (sd-scripts ``get_remove_step_no``): s - n - 1, floored to a multiple of every."""
    if not every or not last_n:
        return None
    old = step - last_n - 1
    old -= old % every
    return old if old > 0 else None


def save_step_checkpoint(s: Session, reporter: Reporter, position: Position) -> None:
    """``<name>-step<step>.safetensors`` (+ its state with ``save_state``); each kind keeps
    its ``save_last_n_steps*`` window."""
    config, step, epoch = s.config, position.step, position.epoch
    save_checkpoint(s, reporter, step_file_name(config.output_name, step), step, epoch, False)
    old = step_to_remove(step, config.save_every_n_steps, config.save_last_n_steps)
    if old is not None:
        _remove(s, reporter, step_file_name(config.output_name, old))
    if config.save_state:
        save_state(s, reporter, step_state_name(config.output_name, step), position, epoch)
        last_n = config.save_last_n_steps_state or config.save_last_n_steps
        old = step_to_remove(step, config.save_every_n_steps, last_n)
        if old is not None:
            _remove(s, reporter, step_state_name(config.output_name, old))


def save_state(s: Session, reporter: Reporter, name: str, position: Position, epoch: int) -> None:
    """The full training state (for an exact resume) as the artifact ``name``."""
    save_training_state(s, position, s.output_dir / name)
    reporter(ArtifactSaved(name, "state", epoch=epoch, step=position.step))


def _remove(s: Session, reporter: Reporter, name: str) -> None:
    path = s.output_dir / name
    if path.exists():
        # Reported first: a process killed in between leaves an unlisted file rather than a
        # listed artifact whose file is gone.
        reporter(ArtifactRemoved(name))
        path.unlink()


def save_checkpoint(
    s: Session, reporter: Reporter, name: str, step: int, epoch: int, final: bool
) -> None:
    # sd-scripts train_network.py (save_model inside NetworkTrainer.train) stamps
    # ss_training_finished_at on every file it saves, epoch and step checkpoints too.
    metadata = {
        **s.metadata,
        "ss_training_finished_at": str(time.time()),
        "ss_steps": str(step),
        "ss_epoch": str(epoch),
    }
    written = save_lora(s.network, s.output_dir / name, s.config.save_precision, metadata)
    kind: ArtifactKind = "lora" if final else "checkpoint"
    reporter(ArtifactSaved(name, kind, epoch=epoch, step=step, metadata=written))
