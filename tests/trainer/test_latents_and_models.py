"""Latent caching and loading base models in both layouts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file

from tests.factories import make_dataset, tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.models.loading import load_sdxl
from trainer.models.tiny import build_tiny_components
from trainer.models.tokenizers import build_sdxl_tokenizers
from trainer.run import TrainingJob, train

SHARED_FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "tiny-sdxl"


def test_single_file_round_trips_every_weight_of_the_miniature(tiny_model):
    model = load_sdxl(tiny_model)
    built = build_tiny_components(seed=0)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        loaded = getattr(model, name).state_dict()
        for key, value in built[name].state_dict().items():
            if key.endswith("position_ids"):
                continue
            assert torch.equal(loaded[key], value.half().float()), (name, key)


def test_a_diffusers_folder_trains_like_the_single_file(tiny_model, toy_dataset, tmp_path):
    tok1, tok2 = build_sdxl_tokenizers()
    pipe = StableDiffusionXLPipeline.from_single_file(
        str(tiny_model), config=str(tiny_model.with_name("tiny-sdxl.config")),
        local_files_only=True, tokenizer=tok1, tokenizer_2=tok2,
    )  # fmt: skip
    folder = tmp_path / "tiny-diffusers"
    pipe.save_pretrained(folder)
    config = parse_payload(tiny_payload(max_train_steps=1, save_every_n_epochs=0)).config
    results = [
        train(TrainingJob(config, base, toy_dataset, tmp_path / name))
        for name, base in (("file", tiny_model), ("folder", folder))
    ]
    a, b = (load_file(str(r.lora_path)) for r in results)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


@shows_effect("cache_latents_to_disk")
def test_latents_cached_to_disk_are_reused_and_give_the_same_training(tiny_model, tmp_path):
    data = make_dataset(tmp_path / "data", {"1_a": 3})
    config = parse_payload(
        tiny_payload(cache_latents_to_disk=True, max_train_steps=2, save_every_n_epochs=0)
    ).config
    first = train(TrainingJob(config, tiny_model, data, tmp_path / "one"))
    cached = sorted((data / "1_a").glob("*_sdxl_*.safetensors"))
    assert len(cached) == 3
    stamps = [os.stat(p).st_mtime_ns for p in cached]
    second = train(TrainingJob(config, tiny_model, data, tmp_path / "two"))
    assert [os.stat(p).st_mtime_ns for p in cached] == stamps  # read, not rewritten
    a, b = load_file(str(first.lora_path)), load_file(str(second.lora_path))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(
    not SHARED_FIXTURE.exists() and not os.environ.get("CI"),
    reason="the shared tiny-sdxl fixture is only beside the checkout in CI and dev machines",
)
def test_the_externally_made_fixture_trains_and_its_lora_loads_in_diffusers(tmp_path, toy_dataset):
    checkpoint = tmp_path / "tiny-sdxl.safetensors"
    shutil.copyfile(SHARED_FIXTURE / "tiny-sdxl.safetensors", checkpoint)
    config_dir = SHARED_FIXTURE / "config"
    config = parse_payload(tiny_payload(max_train_steps=2, save_every_n_epochs=0)).config
    result = train(
        TrainingJob(config, checkpoint, toy_dataset, tmp_path / "out", base_config=config_dir)
    )
    from tests.trainer.test_lora_file import expected_modules

    state = load_file(str(result.lora_path))
    assert {k.split(".")[0] for k in state} == expected_modules(checkpoint)
    tok1, tok2 = build_sdxl_tokenizers()
    pipe = StableDiffusionXLPipeline.from_single_file(
        str(checkpoint), config=str(config_dir), local_files_only=True,
        tokenizer=tok1, tokenizer_2=tok2,
    )  # fmt: skip
    pipe.load_lora_weights(str(result.lora_path))
