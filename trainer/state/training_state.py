"""Save and restore a run's full training state, so a resumed run continues exactly.

One ``.safetensors`` file per state: the network's weights as trained (each type's
own parameters in their training dtype: ``LoraNetwork.state_tensors``), the
optimizer's tensors and every RNG state as tensors, and a JSON header in the
file's metadata holding the rest (position in the run, scheduler, scalar
optimizer state, what the run was). Nothing is unpickled: the file is read with
safetensors and JSON only, so a state file can come from anywhere.

What makes a resume exact: the same weights, optimizer and schedule; every
random stream the run draws from (torch's global generator for the noise and
timesteps, the session's own generators for captions, latents and
augmentations); and the same batch order and position inside the epoch.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from trainer.config import TrainingConfig
from trainer.data.batches import Batch
from trainer.errors import ResumeStateError
from trainer.position import LossRecorder, Position
from trainer.session import Session
from trainer.state.codec import StateFormatError, TensorStore, decode, encode
from trainer.storage import atomic_path

FORMAT: Final = "lorabox.training-state/1"
HEADER_KEY = "lorabox.training_state"
NETWORK = "network."  # the prefix of the network's tensors; the codec's trees use other names
# Keys that only name, describe or schedule outputs: a resumed run may change them.
OUTPUT_ONLY = frozenset(
    {
        "output_name", "training_comment", "save_precision", "save_every_n_epochs",
        "save_every_n_steps", "save_last_n_steps", "save_last_n_steps_state", "save_state",
        "save_state_on_train_end", "sample_every_n_epochs", "sample_every_n_steps",
        "sample_prompts", "sample_sampler", "metadata_title", "metadata_author",
        "metadata_description", "metadata_license", "metadata_tags",
        "pretrained_model_name_or_path",
    }
)  # fmt: skip


class PositionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    epoch: int = Field(ge=1)
    next_batch: int = Field(ge=0)
    order: list[tuple[tuple[int, int], list[int]]] | None
    losses: list[float]


class StateHeader(BaseModel):
    """The JSON half of a state file."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["lorabox.training-state/1"]
    seed: int
    run: dict[str, Any]  # what defines the trajectory: config, plan, dataset
    position: PositionRecord
    train_text_encoder: bool
    trees: dict[str, Any]  # optimizer, scheduler, scaler, rng: encoded (see codec)


def run_identity(config: TrainingConfig, s: Session | None = None) -> dict[str, Any]:
    """What must match for a state to continue this run."""
    identity: dict[str, Any] = {
        "config": {
            key: value
            for key, value in config.model_dump(mode="json").items()
            if key not in OUTPUT_ONLY
        }
    }
    if s is not None:
        identity["total_steps"] = s.plan.total_steps
        identity["epochs"] = s.plan.epochs
        identity["images"] = [
            [f"{im.record.folder}/{im.record.path.name}", im.record.repeats, list(im.bucket)]
            for im in s.images
        ]
    return identity


def save_training_state(s: Session, position: Position, path: Path) -> None:
    tensors = TensorStore()
    for name, tensor in s.network.state_tensors().items():
        tensors.add(f"{NETWORK}{name}", tensor)
    trees = {
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "scaler": s.scaler.state_dict(),  # {} when disabled
        "rng": _rng_states(s),
    }
    header = StateHeader(
        format=FORMAT,
        seed=s.seed,
        run=run_identity(s.config, s),
        position=_position_record(position),
        train_text_encoder=s.train_text_encoder,
        trees={name: encode(tree, tensors, name) for name, tree in trees.items()},
    )
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: header.model_dump_json()})


def read_state_header(path: Path) -> StateHeader:
    """The header alone (cheap: no tensor is read); a clear error for a foreign file."""
    try:
        with safe_open(str(path), framework="pt") as file:
            raw = (file.metadata() or {}).get(HEADER_KEY)
    except (OSError, SafetensorError) as exc:
        raise ResumeStateError(f"cannot read the training state {path.name}: {exc}") from exc
    if raw is None:
        raise ResumeStateError(f"{path.name} is not a lorabox training state")
    try:
        return StateHeader.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ResumeStateError(f"the training state {path.name} is malformed: {exc}") from exc


def check_same_run(header: StateHeader, config: TrainingConfig, s: Session | None = None) -> None:
    """Refuse a state saved by a different run, naming what differs."""
    saved, current = header.run, run_identity(config, s)
    different = sorted(
        key
        for key in set(saved["config"]) | set(current["config"])
        if saved["config"].get(key) != current["config"].get(key)
    )
    different += [
        key
        for key in ("total_steps", "epochs", "images")
        if key in current and saved.get(key) != current[key]
    ]
    if different:
        details = ", ".join(_difference(key, saved, current) for key in different)
        raise ResumeStateError(f"the training state was saved by a different run: {details}")


def restore_training_state(s: Session, path: Path, header: StateHeader) -> Position:
    """Load weights, optimizer, schedule and random streams into ``s``; where to go on."""
    try:
        tensors = load_file(str(path))
        trees = {name: decode(tree, tensors) for name, tree in header.trees.items()}
        _restore_network(s, tensors)
        s.optimizer.load_state_dict(trees["optimizer"])
        s.scheduler.load_state_dict(trees["scheduler"])
        s.scaler.load_state_dict(trees["scaler"])  # a disabled scaler ignores it
        _restore_rng(s, trees["rng"])
    except (StateFormatError, KeyError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ResumeStateError(f"the training state {path.name} cannot be loaded: {exc}") from exc
    s.train_text_encoder = header.train_text_encoder and s.train_text_encoder
    return _position(header.position)


def _restore_network(s: Session, tensors: dict[str, torch.Tensor]) -> None:
    s.network.load_state_tensors(
        {name[len(NETWORK) :]: t for name, t in tensors.items() if name.startswith(NETWORK)}
    )


def _session_rngs(s: Session) -> dict[str, random.Random | torch.Generator]:
    """Every random stream the session owns (captions, latents, augmentations, ...)."""
    found = {}
    for field in dataclasses.fields(s):
        value = getattr(s, field.name)
        if isinstance(value, random.Random | torch.Generator):
            found[field.name] = value
    return found


def _rng_states(s: Session) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "session": {
            name: rng.getstate() if isinstance(rng, random.Random) else rng.get_state()
            for name, rng in _session_rngs(s).items()
        },
    }


def _restore_rng(s: Session, states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    for name, rng in _session_rngs(s).items():
        state = states["session"][name]
        if isinstance(rng, random.Random):
            rng.setstate(state)
        else:
            rng.set_state(state)


def _position_record(position: Position) -> PositionRecord:
    order = None
    if position.order is not None:
        order = [(batch.bucket, list(batch.images)) for batch in position.order]
    return PositionRecord(
        step=position.step,
        epoch=position.epoch,
        next_batch=position.next_batch,
        order=order,
        losses=list(position.recorder.losses),
    )


def _position(record: PositionRecord) -> Position:
    order = None
    if record.order is not None:
        order = [Batch(bucket, tuple(images)) for bucket, images in record.order]
    return Position(
        step=record.step,
        epoch=record.epoch,
        next_batch=record.next_batch,
        order=order,
        recorder=LossRecorder(list(record.losses)),
    )


def _difference(key: str, saved: dict[str, Any], current: dict[str, Any]) -> str:
    if key in saved["config"] or key in current["config"]:
        return f"{key} {saved['config'].get(key)!r} -> {current['config'].get(key)!r}"
    if key == "images":
        return "the dataset's images differ"
    return f"{key} {saved.get(key)!r} -> {current.get(key)!r}"
