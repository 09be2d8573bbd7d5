"""The real PDXL seed payload parses into the config kohya_ss v24.1.7 and sd-scripts run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.factories import SEED_PAYLOAD
from trainer.config import KEYS, Status, TrainingConfig, parse_payload

# The seed ships in tests/data (users don't have ../shared); where the shared original is beside
# the checkout (CI, dev machines) the copy is checked against it.
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "pdxl-kohya-config.json"
DROPPED = [
    "logging_dir",
    "loss_type",
    "huber_c",
    "huber_schedule",
    "log_with",
    "log_tracker_name",
    "log_tracker_config",
    "huggingface_repo_id",
    "huggingface_token",
    "huggingface_repo_type",
    "huggingface_repo_visibility",
    "huggingface_path_in_repo",
    "metadata_author",
    "metadata_description",
    "metadata_license",
    "metadata_tags",
    "metadata_title",
]


@pytest.fixture(scope="module")
def seed() -> dict[str, Any]:
    return dict(json.loads(SEED_PAYLOAD.read_text()))


@pytest.mark.skipif(
    not SHARED_SEED.exists() and not os.environ.get("CI"),
    reason="the shared seed is only beside the checkout in CI and dev machines",
)
def test_the_bundled_seed_is_the_shared_original() -> None:
    assert SEED_PAYLOAD.read_bytes() == SHARED_SEED.read_bytes()


def test_seed_parses_into_the_reference_config(seed: dict[str, Any]) -> None:
    config = parse_payload(seed).config

    assert (config.network_dim, config.network_alpha) == (32, 16.0)
    assert config.optimizer == "AdamW8bit" and config.optimizer_args == {}
    assert (config.unet_lr, config.text_encoder_lr, config.learning_rate) == (1e-4, 1e-4, 2e-4)
    assert config.train_unet and config.train_text_encoder
    assert (config.train_batch_size, config.epochs, config.gradient_accumulation_steps) == (
        3,
        36,
        1,
    )
    assert config.max_train_steps is None and config.max_train_epochs is None
    assert config.resolution == (1024, 1024)
    assert (config.min_bucket_reso, config.max_bucket_reso, config.bucket_reso_steps) == (
        256,
        2048,
        64,
    )
    assert config.enable_bucket and config.bucket_no_upscale
    assert config.lr_scheduler == "constant" and config.lr_warmup_percent == 0.0
    assert config.mixed_precision == "fp16" and config.save_precision == "fp16"
    assert config.cache_latents and not config.cache_latents_to_disk
    assert config.shuffle_caption and config.keep_tokens == 5 and config.max_token_length == 150
    assert config.caption_extension == ".txt"
    assert config.noise_offset == 0.0357 and config.noise_offset_random_strength
    assert config.debiased_estimation_loss and config.min_snr_gamma is None
    assert (config.min_timestep, config.max_timestep) == (0, 1000)
    assert config.seed == 42 and config.save_every_n_epochs == 2
    assert config.gradient_checkpointing and config.max_grad_norm == 1.0
    assert config.output_name == "last"  # the seed's elided "..." means unset
    assert config.multires_noise_discount == 0.3  # seed 0 = unset = sd-scripts default
    assert config.vae_batch_size == 1 and config.vae is None and config.network_weights is None
    assert config.clip_skip == 2 and config.lora_type == "Standard"


def test_seed_warns_only_that_clip_skip_is_metadata_on_sdxl(seed: dict[str, Any]) -> None:
    assert [w.field for w in parse_payload(seed).warnings] == ["clip_skip"]


def test_registry_holds_every_seed_key_and_the_17_dropped_ones(seed: dict[str, Any]) -> None:
    assert len(seed) == 140 and len(DROPPED) == 17
    assert set(seed) | set(DROPPED) <= set(KEYS)
    gui_keys = {key for key, spec in KEYS.items() if spec.gui}
    assert gui_keys == set(seed) | set(DROPPED)


def test_every_registry_entry_has_a_status_meaning_and_reason_where_needed() -> None:
    for key, spec in KEYS.items():
        assert spec.key == key
        assert isinstance(spec.status, Status)
        assert spec.meaning.strip(), key
        if spec.status is not Status.HONOURED or spec.supported is not None:
            assert spec.reason.strip(), key


def test_normalized_holds_every_key_and_parses_to_the_same_config(seed: dict[str, Any]) -> None:
    parsed = parse_payload(seed)

    assert set(parsed.normalized) == set(KEYS)
    assert json.loads(json.dumps(parsed.normalized)) == parsed.normalized
    assert parse_payload(parsed.normalized).config == parsed.config


def test_config_round_trips_through_json_dump_and_validate(seed: dict[str, Any]) -> None:
    payload = dict(seed, optimizer_args="betas=0.9,0.99 weight_decay=0.01 amsgrad=False")
    config = parse_payload(payload).config

    dumped = json.loads(json.dumps(config.model_dump(mode="json")))
    again = TrainingConfig.model_validate(dumped)

    assert again == config
    assert again.optimizer_args["betas"] == (0.9, 0.99)


def test_config_package_imports_no_torch_diffusers_or_pil() -> None:
    code = (
        "import sys, trainer.config, trainer.config.payload;"
        "heavy = [m for m in ('torch', 'diffusers', 'PIL', 'transformers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
