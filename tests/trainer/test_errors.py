"""Typed errors with messages a user can act on."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.factories import make_dataset, tiny_payload
from trainer.config import parse_payload
from trainer.errors import (
    BaseModelError,
    InvalidDatasetError,
    NonFiniteLatentError,
    NonFiniteLossError,
    OutOfMemoryError,
)
from trainer.hooks import Notice
from trainer.run import TrainingJob, train


def job(tmp_path, base, data, **overrides):
    config = parse_payload(tiny_payload(max_train_steps=2, **overrides)).config
    return TrainingJob(config, base, data, tmp_path / "out")


def test_a_dataset_without_images_is_refused(tiny_model, tmp_path):
    (tmp_path / "data" / "3_empty").mkdir(parents=True)
    with pytest.raises(InvalidDatasetError, match="no images found"):
        train(job(tmp_path, tiny_model, tmp_path / "data"))


def test_an_unreadable_image_is_named(tiny_model, tmp_path):
    data = make_dataset(tmp_path / "data")
    (data / "2_toy" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(InvalidDatasetError, match="2_toy/broken.png"):
        train(job(tmp_path, tiny_model, data))


def test_a_caption_that_is_not_utf8_is_named(tiny_model, tmp_path):
    data = make_dataset(tmp_path / "data")
    (data / "2_toy" / "img001.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(InvalidDatasetError, match="img001.txt is not UTF-8"):
        train(job(tmp_path, tiny_model, data))


def test_a_missing_base_model_is_reported(toy_dataset, tmp_path):
    with pytest.raises(BaseModelError, match="does not exist"):
        train(job(tmp_path, tmp_path / "nope.safetensors", toy_dataset))


def test_a_corrupt_base_model_is_reported(toy_dataset, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(BaseModelError, match="not a readable safetensors"):
        train(job(tmp_path, corrupt, toy_dataset))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_checkpoints_are_refused(toy_dataset, tmp_path, suffix):
    pickle = tmp_path / f"model{suffix}"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(BaseModelError, match="pickle"):
        train(job(tmp_path, pickle, toy_dataset))


def poisoned_copy(tiny_model, tmp_path, key_part: str):
    """A copy of the miniature with NaN in the first weight whose name contains key_part."""
    state = load_file(str(tiny_model))
    key = next(k for k in state if key_part in k)
    state[key] = torch.full_like(state[key], float("nan"))
    target = tmp_path / "poisoned.safetensors"
    save_file(state, str(target))
    shutil.copytree(tiny_model.with_name(tiny_model.stem + ".config"), tmp_path / "poisoned.config")
    return target


def test_nan_loss_stops_at_the_first_step_and_names_it(tiny_model, toy_dataset, tmp_path):
    base = poisoned_copy(tiny_model, tmp_path, "model.diffusion_model.out.2.weight")
    with pytest.raises(NonFiniteLossError, match="at step 1: lower the learning rate") as caught:
        train(job(tmp_path, base, toy_dataset))
    assert caught.value.step == 1 and caught.value.code == "nan_loss"
    assert not list((tmp_path / "out").glob("*.safetensors"))


def test_non_finite_latents_are_reported_with_the_image(tiny_model, toy_dataset, tmp_path):
    base = poisoned_copy(tiny_model, tmp_path, "first_stage_model.quant_conv.weight")
    with pytest.raises(NonFiniteLatentError, match="NaN/inf latents for"):
        train(job(tmp_path, base, toy_dataset))


def test_cuda_out_of_memory_becomes_a_typed_error_with_advice(tiny_model, toy_dataset, tmp_path):
    def exhaust(step: int) -> None:
        if step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemoryError, match="train_batch_size") as caught:
        train(job(tmp_path, tiny_model, toy_dataset), step_hook=exhaust)
    assert caught.value.code == "cuda_oom"


def test_fp16_without_cuda_falls_back_to_fp32_with_a_warning(tiny_model, toy_dataset, tmp_path):
    events: list = []
    result = train(job(tmp_path, tiny_model, toy_dataset, mixed_precision="fp16"), events.append)
    notices = [e for e in events if isinstance(e, Notice)]
    assert any(n.field == "mixed_precision" and "fp32" in n.message for n in notices)
    assert result.steps == 2


def test_a_checkpoint_whose_tensors_do_not_fit_the_configs_is_reported(
    tiny_model, toy_dataset, tmp_path
):
    state = load_file(str(tiny_model))
    del state[next(k for k in state if k.startswith("model.diffusion_model.out.2"))]
    truncated = tmp_path / "truncated.safetensors"
    save_file(state, str(truncated))
    shutil.copytree(
        tiny_model.with_name(tiny_model.stem + ".config"), tmp_path / "truncated.config"
    )
    with pytest.raises(BaseModelError, match="could not be loaded"):
        train(job(tmp_path, truncated, toy_dataset))
