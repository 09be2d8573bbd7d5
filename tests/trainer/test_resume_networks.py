"""Exact resume for the network types whose weights are not lora_down/lora_up pairs.

A LyCORIS network (the library's own modules: LoKr's ``lokr_w1``, ``lokr_w2_a``, ...) and
Kohya DyLoRA (one tensor per rank row, a rank drawn per step from Python's ``random``) are
suspended after step 1 - the host's stop signal, the path the worker's graceful stop and the
scheduler's preemption take, with ``save_state`` off - and resumed from the state written
then: the rest of the run reports the uninterrupted run's losses and ends with its tensors,
bit for bit (as ``test_resume.py`` shows for Standard LoRA).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.factories import tiny_payload
from trainer.config import parse_payload
from trainer.errors import TrainingSuspended
from trainer.hooks import Event, StepCompleted
from trainer.lora.build import build_network
from trainer.models.tiny import build_tiny_components
from trainer.run import TrainingJob, train

pytestmark = pytest.mark.slow

# Random streams in play: LyCORIS' rank and module dropouts (torch's generator), DyLoRA's
# rank draw (Python's), caption shuffling; AdamW's moments and a warmup schedule.
TYPES: dict[str, dict[str, Any]] = {
    "LyCORIS/LoKr": {"rank_dropout": 0.2, "module_dropout": 0.1, "factor": 4},
    "Kohya DyLoRA": {"unit": 2, "conv_dim": 0},
}


def payload(kind: str) -> dict[str, Any]:
    return tiny_payload(
        LoRA_type=kind, **TYPES[kind], seed=7, max_train_steps=3, lr_warmup=34,
        unet_lr=1e-3, text_encoder_lr=1e-3, shuffle_caption=True, save_every_n_epochs=0,
        save_precision="float", save_state_on_train_end=True, train_batch_size=1,
    )  # fmt: skip


def job(kind: str, tiny_model: Path, data: Path, out: Path, **kw: Any) -> TrainingJob:
    return TrainingJob(parse_payload(payload(kind)).config, tiny_model, data, out, **kw)


def losses(events: list[Event]) -> list[float]:
    return [e.loss for e in events if isinstance(e, StepCompleted)]


def file_bytes(path: Path) -> dict[str, bytes]:
    return {key: t.numpy().tobytes() for key, t in load_file(str(path)).items()}


@pytest.mark.parametrize("kind", list(TYPES))
def test_suspended_run_resumes_to_the_uninterrupted_runs_tensors(
    kind, tiny_model, toy_dataset, tmp_path
):
    reference: list[Event] = []
    train(job(kind, tiny_model, toy_dataset, tmp_path / "ref"), reporter=reference.append)

    out = tmp_path / "out"
    first: list[Event] = []

    def suspend_after_one() -> Any:
        return "suspend" if losses(first) else None

    with pytest.raises(TrainingSuspended) as suspended:
        train(
            job(kind, tiny_model, toy_dataset, out), reporter=first.append, stop=suspend_after_one
        )
    state = out / str(suspended.value.state)
    second: list[Event] = []
    train(job(kind, tiny_model, toy_dataset, out, resume_state=state), reporter=second.append)

    assert losses(first) + losses(second) == losses(reference)
    assert file_bytes(out / "toy.safetensors") == file_bytes(tmp_path / "ref" / "toy.safetensors")
    # The training state holds the network's own tensors, not the (derived) file layout.
    final = load_file(str(tmp_path / "ref" / "toy-state.safetensors"))
    names = {k.split(".", 2)[2] for k in final if k.startswith("network.")}
    own = {"lokr_w1", "lokr_w2_a", "lokr_w2_b"} if kind == "LyCORIS/LoKr" else {"lora_A.0"}
    assert own <= names, sorted(names)[:8]

    # A state whose network tensors do not fit this network is refused, naming one.
    network = build_network(job(kind, tiny_model, toy_dataset, tmp_path).config, **parts())
    saved = {k.removeprefix("network."): v for k, v in final.items() if k.startswith("network.")}
    network.load_state_tensors(saved)  # the state's names and shapes are this network's
    name = next(iter(saved))
    with pytest.raises(ValueError, match=f"{re.escape(name)} has shape"):
        network.load_state_tensors({**saved, name: torch.zeros(1)})
    with pytest.raises(ValueError, match="lacks"):
        network.load_state_tensors({k: v for k, v in saved.items() if k != name})


def parts() -> dict[str, Any]:
    components = build_tiny_components()
    encoders = (components["text_encoder"], components["text_encoder_2"])
    return {"unet": components["unet"], "encoders": encoders}
