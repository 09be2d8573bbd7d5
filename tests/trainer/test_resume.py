"""Exact resume: a run stopped after its state at step k was saved and resumed from it
reports exactly steps k+1..N and ends with the uninterrupted run's LoRA tensors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.errors import ResumeStateError, TrainingSuspended
from trainer.hooks import ArtifactRemoved, ArtifactSaved, Event, StepCompleted
from trainer.run import TrainingJob, train
from trainer.state.training_state import read_state_header

pytestmark = pytest.mark.slow

# Every random stream the trainer draws from is in play: caption shuffling and dropout
# (the session's caption RNG), VAE sampling per step (its latent generator), noise offset,
# timesteps and LoRA dropout (torch's global generator); AdamW8bit's quantized state and a
# warmup+cosine schedule; gradient accumulation across an epoch boundary.
RESUME_PAYLOAD = tiny_payload(
    seed=42, epoch=3, optimizer="AdamW8bit", lr_scheduler="cosine", lr_warmup=20,
    gradient_accumulation_steps=2, shuffle_caption=True, caption_dropout_rate=0.3,
    cache_latents=False, noise_offset=0.05, noise_offset_random_strength=True,
    network_dropout=0.1, save_every_n_epochs=0, save_every_n_steps=2, save_state=True,
)  # fmt: skip


def lora_bytes(path: Path) -> dict[str, bytes]:
    return {key: tensor.numpy().tobytes() for key, tensor in load_file(str(path)).items()}


def make_job(tiny_model: Path, data: Path, out: Path, payload: dict[str, Any], **kw: Any):
    return TrainingJob(parse_payload(payload).config, tiny_model, data, out, **kw)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, toy_dataset, tmp_path_factory) -> tuple[Path, list[Event]]:
    out = tmp_path_factory.mktemp("uninterrupted")
    events: list[Event] = []
    train(make_job(tiny_model, toy_dataset, out, RESUME_PAYLOAD), reporter=events.append)
    return out, events


def steps_of(events: list[Event]) -> list[int]:
    return [e.step for e in events if isinstance(e, StepCompleted)]


KILLED_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from trainer.config import parse_payload
    from trainer.run import TrainingJob, train

    payload, model, data, out, kill_at = sys.argv[1:]

    def hook(step):
        if step == int(kill_at):  # mid-way through steps after the last saved state
            os.kill(os.getpid(), signal.SIGKILL)

    config = parse_payload(json.loads(Path(payload).read_text())).config
    train(TrainingJob(config, Path(model), Path(data), Path(out)), step_hook=hook)
    """
)


@shows_effect("save_state")
def test_sigkilled_run_resumed_from_its_state_reports_the_rest_and_ends_identical(
    tiny_model, toy_dataset, tmp_path, uninterrupted
):
    reference_dir, reference_events = uninterrupted
    total = steps_of(reference_events)[-1]
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(RESUME_PAYLOAD))
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(payload), str(tiny_model), str(toy_dataset),
         str(out), "6"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    states = sorted(out.glob("toy-step*-state.safetensors"))
    assert [p.name for p in states] == ["toy-step00000002-state.safetensors",
                                        "toy-step00000004-state.safetensors"]  # fmt: skip
    assert not (out / "toy.safetensors").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "trainer", "--config", str(payload), "--base", str(tiny_model),
         "--data", str(toy_dataset), "--out", str(out), "--resume", str(states[-1])],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reported = [
        int(line.split()[1].split("/")[0])
        for line in resumed.stdout.splitlines()
        if line.startswith("step ")
    ]
    assert reported == list(range(5, total + 1))
    assert lora_bytes(out / "toy.safetensors") == lora_bytes(reference_dir / "toy.safetensors")
    # The moving average reported at the end continues the same window too.
    last_line = [line for line in resumed.stdout.splitlines() if line.startswith("step ")][-1]
    reference_last = [e for e in reference_events if isinstance(e, StepCompleted)][-1]
    assert f"avr_loss {reference_last.avg_loss:.4f}" in last_line


def test_suspend_request_saves_state_and_resuming_it_matches_the_uninterrupted_run(
    tiny_model, toy_dataset, tmp_path, uninterrupted
):
    reference_dir, reference_events = uninterrupted
    out = tmp_path / "out"
    first: list[Event] = []

    def suspend_after_three() -> Any:
        done = steps_of(first)
        return "suspend" if done and done[-1] >= 3 else None

    job = make_job(tiny_model, toy_dataset, out, RESUME_PAYLOAD)
    with pytest.raises(TrainingSuspended) as suspended:
        train(job, reporter=first.append, stop=suspend_after_three)
    assert suspended.value.state == "toy-step00000003-state.safetensors"
    assert steps_of(first) == [1, 2, 3]
    second: list[Event] = []
    resumed_job = make_job(
        tiny_model, toy_dataset, out, RESUME_PAYLOAD, resume_state=out / suspended.value.state
    )
    train(resumed_job, reporter=second.append)
    assert steps_of(second) == steps_of(reference_events)[3:]
    assert lora_bytes(out / "toy.safetensors") == lora_bytes(reference_dir / "toy.safetensors")
    reference_losses = [e.loss for e in reference_events if isinstance(e, StepCompleted)]
    assert [e.loss for e in second if isinstance(e, StepCompleted)] == reference_losses[3:]


def test_resuming_the_final_state_trains_nothing_more(
    tiny_model, toy_dataset, tmp_path, uninterrupted
):
    reference_dir, _ = uninterrupted
    events: list[Event] = []
    job = make_job(
        tiny_model, toy_dataset, tmp_path, RESUME_PAYLOAD,
        resume_state=reference_dir / "toy-state.safetensors",
    )  # fmt: skip
    train(job, reporter=events.append)
    assert steps_of(events) == []
    assert lora_bytes(tmp_path / "toy.safetensors") == lora_bytes(reference_dir / "toy.safetensors")


def test_without_fp16_the_gradient_scaler_is_disabled_silently_and_saved_empty(uninterrupted):
    """The loop always calls the scaler; disabled, it passes through and its state is {}."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "CUDA is not available" warning on a CPU
        scaler = torch.amp.GradScaler("cuda", enabled=False)
    assert scaler.state_dict() == {}
    reference_dir, _ = uninterrupted
    header = read_state_header(reference_dir / "toy-state.safetensors")
    assert header.trees["scaler"] == {}  # what the resume tests load back


def test_a_state_from_a_different_run_is_refused_naming_what_differs(
    tiny_model, toy_dataset, tmp_path, uninterrupted
):
    reference_dir, _ = uninterrupted
    state = reference_dir / "toy-step00000002-state.safetensors"
    other = {**RESUME_PAYLOAD, "network_dim": 8, "output_name": "renamed"}
    with pytest.raises(ResumeStateError, match=r"network_dim 4 -> 8") as refused:
        train(make_job(tiny_model, toy_dataset, tmp_path, other, resume_state=state))
    assert "output_name" not in refused.value.message  # naming outputs may change
    assert refused.value.code == "invalid_resume_state"


def test_a_lora_file_or_a_damaged_header_is_not_a_training_state(
    tiny_model, toy_dataset, tmp_path, uninterrupted
):
    reference_dir, _ = uninterrupted
    lora = reference_dir / "toy.safetensors"
    with pytest.raises(ResumeStateError, match="is not a lorabox training state"):
        train(make_job(tiny_model, toy_dataset, tmp_path, RESUME_PAYLOAD, resume_state=lora))
    damaged = tmp_path / "damaged-state.safetensors"
    tensors = load_file(str(reference_dir / "toy-state.safetensors"))
    save_file(tensors, str(damaged), metadata={"lorabox.training_state": '{"format": "x"}'})
    with pytest.raises(ResumeStateError, match="malformed"):
        train(make_job(tiny_model, toy_dataset, tmp_path, RESUME_PAYLOAD, resume_state=damaged))


@shows_effect("save_last_n_steps_state")
def test_save_last_n_steps_state_keeps_a_window_of_step_states(tiny_model, toy_dataset, tmp_path):
    payload = tiny_payload(
        seed=1, max_train_steps=6, save_every_n_epochs=0, save_every_n_steps=1, save_state=True,
        save_last_n_steps_state=2,
    )  # fmt: skip
    events: list[Event] = []
    train(make_job(tiny_model, toy_dataset, tmp_path, payload), reporter=events.append)
    states = sorted(p.name for p in tmp_path.glob("toy-step*-state.safetensors"))
    # sd-scripts' window: after saving at s, the state at s - n - 1 goes.
    assert states == [f"toy-step{s:08d}-state.safetensors" for s in (3, 4, 5)]
    # Every step file stays: the model window (save_last_n_steps) is unset.
    assert len(list(tmp_path.glob("toy-step*[0-9].safetensors"))) == 5
    removed = [e.path for e in events if isinstance(e, ArtifactRemoved)]
    assert removed == [f"toy-step{s:08d}-state.safetensors" for s in (1, 2)]


@shows_effect("save_state_on_train_end")
def test_save_state_on_train_end_saves_only_the_final_state(tiny_model, toy_dataset, tmp_path):
    payload = tiny_payload(seed=1, max_train_steps=2, save_state_on_train_end=True)
    events: list[Event] = []
    train(make_job(tiny_model, toy_dataset, tmp_path, payload), reporter=events.append)
    saved = [(e.path, e.step) for e in events if isinstance(e, ArtifactSaved) and e.kind == "state"]
    assert saved == [("toy-state.safetensors", 2)]
    assert os.path.getsize(tmp_path / "toy-state.safetensors") > 0
