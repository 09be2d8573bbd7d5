"""The trainer talks to its host through the reporter and the stop signal only."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.errors import TrainingCancelled
from trainer.hooks import ArtifactSaved, PhaseChanged, StepCompleted, TrainingStarted
from trainer.run import TrainingJob, train


def test_events_report_phases_steps_and_artifacts_in_order(trained_run):
    phases = [e.phase for e in trained_run.events if isinstance(e, PhaseChanged)]
    # Latents are cached with the VAE alone on the device; placing the rest and building the
    # network come after, and are loading again (trainer/run.py: build_session).
    assert phases[:4] == ["loading", "caching", "loading", "training"]
    assert phases[-1] == "saving"
    started = next(e for e in trained_run.events if isinstance(e, TrainingStarted))
    steps = [e for e in trained_run.events if isinstance(e, StepCompleted)]
    assert [e.step for e in steps] == list(range(1, started.total_steps + 1))
    assert all(e.total_steps == started.total_steps and e.loss > 0 for e in steps)
    assert set(steps[0].lr) == {"textencoder", "unet"}
    assert steps[-1].peak_gpu_mem_bytes is None  # CPU
    artifacts = [e for e in trained_run.events if isinstance(e, ArtifactSaved)]
    assert [(a.path, a.kind) for a in artifacts] == [
        ("toy-000001.safetensors", "checkpoint"),
        ("toy.safetensors", "lora"),
    ]


def test_average_loss_is_the_mean_of_the_last_epochs_losses(trained_run):
    steps = [e for e in trained_run.events if isinstance(e, StepCompleted)]
    per_epoch = trained_run.result.steps // trained_run.result.epochs
    window = [e.loss for e in steps[-per_epoch:]]
    assert steps[-1].avg_loss == pytest.approx(sum(window) / len(window))


def stop_after(step_count: int, request: str):
    state = {"steps": 0}

    def reporter(event):
        if isinstance(event, StepCompleted):
            state["steps"] = event.step

    def stop():
        return request if state["steps"] >= step_count else None

    return reporter, stop


def test_finish_request_ends_within_one_step_and_saves_the_final_lora(
    tiny_model, toy_dataset, tmp_path
):
    config = parse_payload(tiny_payload(save_every_n_epochs=0)).config
    reporter, stop = stop_after(2, "finish")
    result = train(TrainingJob(config, tiny_model, toy_dataset, tmp_path), reporter, stop)
    assert result.steps == 2 and result.stopped_early
    assert load_file(str(tmp_path / "toy.safetensors"))
    assert [p.name for p in tmp_path.glob("*.safetensors")] == ["toy.safetensors"]


def test_abort_request_ends_within_one_step_and_saves_nothing_more(
    tiny_model, toy_dataset, tmp_path
):
    config = parse_payload(tiny_payload(save_every_n_epochs=0)).config
    steps: list[int] = []
    reporter, stop = stop_after(1, "abort")

    def record(event):
        reporter(event)
        if isinstance(event, StepCompleted):
            steps.append(event.step)

    with pytest.raises(TrainingCancelled):
        train(TrainingJob(config, tiny_model, toy_dataset, tmp_path), record, stop)
    assert steps == [1]
    assert not list(tmp_path.glob("*.safetensors"))


def test_unet_lr_zero_trains_only_the_text_encoders(tiny_model, toy_dataset, tmp_path):
    payload = tiny_payload(unet_lr=0, text_encoder_lr=1e-4, max_train_steps=1)
    config = parse_payload(payload).config
    result = train(TrainingJob(config, tiny_model, toy_dataset, tmp_path))
    keys = load_file(str(result.lora_path)).keys()
    assert keys and all(k.startswith("lora_te") for k in keys)


def test_text_encoder_lr_zero_trains_only_the_unet(tiny_model, toy_dataset, tmp_path):
    payload = tiny_payload(unet_lr=1e-4, text_encoder_lr=0, max_train_steps=1)
    config = parse_payload(payload).config
    result = train(TrainingJob(config, tiny_model, toy_dataset, tmp_path))
    keys = load_file(str(result.lora_path)).keys()
    assert keys and all(k.startswith("lora_unet_") for k in keys)


@shows_effect("network_weights")
def test_network_weights_continue_from_an_existing_kohya_lora(
    trained_run, tiny_model, toy_dataset, tmp_path
):
    config = parse_payload(tiny_payload()).config
    source = trained_run.result.lora_path
    job = TrainingJob(config, tiny_model, toy_dataset, tmp_path, network_weights=source)
    # Finishing before the first step saves the weights exactly as loaded.
    result = train(job, stop=lambda: "finish")
    assert result.steps == 0
    start, saved = load_file(str(source)), load_file(str(result.lora_path))
    assert start.keys() == saved.keys()
    assert all(bool((start[k] == saved[k]).all()) for k in start)
