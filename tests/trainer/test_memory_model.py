"""The torch-free memory and FLOP model (trainer/estimate/model.py): its sizes are the built
networks', its optimizer state the optimizers' own, and it moves the way memory must.
Its agreement with full-size traces is checked beside the traces (test_memory_trace.py)."""

from __future__ import annotations

import json
import math
import warnings
from functools import cache
from pathlib import Path

import pytest
import torch

from tests.factories import seed_payload
from trainer.config import TrainingConfig, parse_payload
from trainer.config.keys_core import OPTIMIZERS
from trainer.estimate import architecture
from trainer.estimate.architecture import Architecture
from trainer.estimate.fake import meta_sdxl, prepared_meta_model
from trainer.estimate.model import (
    ALLOWANCES,
    PARTS,
    estimate_footprint,
    memory_notes,
    optimizer_bytes,
    weight_bytes,
)
from trainer.lora import targets
from trainer.models.configs import SDXL_BASE_CONFIG
from trainer.optim.optimizers import build_optimizer
from trainer.placement import Offload

GIB = 2**30
LOCON = {"LoRA_type": "Kohya LoCon", "conv_dim": 8, "conv_alpha": 4}


def _config(**overrides: object) -> TrainingConfig:
    return parse_payload({**seed_payload(), **overrides}).config


@cache
def full() -> Architecture:
    return Architecture.from_config_dir(SDXL_BASE_CONFIG)


def _bytes(tensors: object) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_parameter_counts_are_the_built_networks(size: str, tiny_config_dir: Path):
    config_dir = SDXL_BASE_CONFIG if size == "full" else tiny_config_dir
    model = meta_sdxl(config_dir)
    built = {name: sum(p.numel() for p in getattr(model, name).parameters())
             for name in ("unet", "vae", "text_encoder", "text_encoder_2")}  # fmt: skip
    assert Architecture.from_config_dir(config_dir).parameter_counts() == built


CASES = [("full", {}), ("full", {**LOCON, "text_encoder_lr": 0}), ("tiny", {}),
         ("tiny", LOCON), ("tiny", {**LOCON, "conv_dim": 0})]  # fmt: skip


@pytest.mark.parametrize(("size", "overrides"), CASES)
def test_lora_modules_and_weights_are_build_networks(size, overrides, tiny_config_dir: Path):
    config_dir = SDXL_BASE_CONFIG if size == "full" else tiny_config_dir
    config = _config(**overrides)
    meta = prepared_meta_model(config, config_dir)
    arch = Architecture.from_config_dir(config_dir)
    layers = arch.lora_layers(config.lora_type, config.conv_dim, unet=config.train_unet,
                              text=config.train_text_encoder)  # fmt: skip
    assert len(layers) == len(meta.network.modules)
    step = estimate_footprint(config, arch).phases["step"]
    assert step["lora"] == _bytes(meta.network.parameters())
    # The frozen parts the trainer keeps on the device (trainer.placement), prepared as
    # prepare_model casts them, to the byte.
    away = Offload.for_config(config).modules(meta.model)
    parts = (meta.model.unet, meta.model.vae, meta.model.text_encoder, meta.model.text_encoder_2)
    kept = [part for part in parts if all(part is not gone for gone in away)]
    weights = [t for part in kept for t in (*part.parameters(), *part.buffers())]
    assert step["weights"] == _bytes(weights) - step["lora"]


def test_the_network_types_are_the_trainers():
    assert architecture.LOCON == targets.LOCON


def _lora_like_weights() -> list[torch.nn.Parameter]:
    """LoRA modules' down and up weights: large enough for 8-bit states and not, up weights
    at zero as peft starts them, a Linear pair and a 4-D conv pair (LoCon), and a pair of
    10^5 values or more (what a Paged optimizer keeps in unified memory on CUDA; counted)."""
    torch.manual_seed(0)
    shapes = [(32, 640), (640, 32), (8, 320, 3, 3), (320, 8, 1, 1), (64, 2048), (2048, 64)]
    weights = [torch.nn.Parameter(torch.randn(shape) * 0.01) for shape in shapes]
    for up in weights[1::2]:
        up.data.zero_()
    return weights


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_state_is_what_each_registered_optimizer_allocates(name: str):
    rates = {"learning_rate": 1.0, "unet_lr": 1.0, "text_encoder_lr": 1.0}
    config = _config(optimizer=name, **rates)
    weights = _lora_like_weights()
    modelled = [(tuple(w.shape), not bool(w.any())) for w in weights]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Paged* on a CPU, D-Adaptation's notices
        groups = [{"params": weights, "lr": 1.0}]
        optimizer = build_optimizer(config.optimizer, groups, dict(config.optimizer_args))
        for weight in weights:
            weight.grad = torch.randn_like(weight)
        optimizer.step()
    allocated: dict[int, int] = {}  # by storage: bitsandbytes' quantile maps are shared
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and not (key == "step" and value.dim() == 0):
                allocated[value.untyped_storage().data_ptr()] = _bytes([value])
    assert optimizer_bytes(config, modelled) == sum(allocated.values())


def _step(config: TrainingConfig) -> dict[str, int]:
    """The step's parts (caching latents can hold more than a small step: tested below)."""
    return estimate_footprint(config, full()).phases["step"]


def _footprint(**overrides: object) -> int:
    return sum(_step(_config(**overrides)).values())


def test_the_parts_add_up_to_the_peak_and_the_allowances_to_the_device():
    footprint = estimate_footprint(_config(), full())
    assert list(footprint.parts) == [*PARTS, *ALLOWANCES]
    assert footprint.peak_bytes == sum(footprint.parts[name] for name in PARTS)
    assert footprint.device_bytes == sum(footprint.parts.values())
    assert all(value >= 0 for value in footprint.parts.values())
    assert footprint.parts["activations"] > 0 and footprint.step_flops > 0


@pytest.mark.parametrize(
    ("small", "large"),
    [
        ({"train_batch_size": 1}, {"train_batch_size": 3}),
        ({"max_resolution": "768,768"}, {"max_resolution": "1024,1024"}),
        ({"max_token_length": 75}, {"max_token_length": 225}),
        ({"network_dim": 8, "network_alpha": 4}, {"network_dim": 64, "network_alpha": 32}),
        ({"gradient_checkpointing": True}, {"gradient_checkpointing": False}),
        ({"optimizer": "AdamW8bit"}, {"optimizer": "AdamW"}),
        ({"cache_latents": True}, {"cache_latents": False}),
    ],
)
def test_the_estimate_grows_with_what_the_step_holds(small: dict, large: dict):
    assert _footprint(**small) < _footprint(**large)


def test_flops_grow_with_batch_area_and_accumulation_and_checkpointing_recomputes():
    def flops(**overrides: object) -> int:
        return estimate_footprint(_config(**overrides), full()).step_flops

    base = flops(train_batch_size=1)
    assert 2.9 < flops(train_batch_size=3) / base <= 3.0
    assert flops(train_batch_size=1, max_resolution="768,768") < 0.6 * base
    assert flops(train_batch_size=1, gradient_accumulation_steps=2) == 2 * base
    assert flops(train_batch_size=1, gradient_checkpointing=False) < 0.8 * base


def test_cached_parts_leave_the_device():
    seed = _step(_config())["weights"]
    vae = _step(_config(cache_latents=False))["weights"] - seed
    assert vae == 4 * full().parameter_counts()["vae"]  # fp32
    cached = _config(text_encoder_lr=0, shuffle_caption=False, sdxl_cache_text_encoder_outputs=True)
    encoders = seed - _step(cached)["weights"]
    counts = full().parameter_counts()
    assert encoders == 2 * (counts["text_encoder"] + counts["text_encoder_2"]) + 8 * 2 * 77
    # The cache is host memory: the number of cached images changes nothing on the device.
    assert estimate_footprint(cached, full(), cached_text_items=2000) == estimate_footprint(
        cached, full()
    )


def test_a_miniature_job_is_small_and_positive(tiny_config_dir: Path):
    payload = {**seed_payload(), "max_resolution": "64,64", "min_bucket_reso": 64,
               "train_batch_size": 2, "network_dim": 4, "network_alpha": 2}  # fmt: skip
    footprint = estimate_footprint(parse_payload(payload).config,
                                   Architecture.from_config_dir(tiny_config_dir))  # fmt: skip
    assert 0 < footprint.peak_bytes < 64 * 2**20
    assert footprint.parts["weights"] > footprint.parts["lora"] > 0
    assert footprint.parts["activations"] > 0 and footprint.step_flops > 0
    assert json.dumps(footprint.parts)  # plain ints, as the API stores them
    assert math.isfinite(footprint.device_bytes)


def test_fp8_base_stores_the_frozen_layers_in_one_byte():
    fp16 = _step(_config())["weights"]
    fp8 = _step(_config(fp8_base=True))["weights"]
    assert 0.5 * fp16 < fp8 < 0.6 * fp16  # norms, embeddings and the VAE stay as they are


def test_caching_latents_holds_the_vae_alone_and_is_not_the_peak():
    batch1 = estimate_footprint(_config(train_batch_size=1), full())
    caching, step = batch1.phases["caching_latents"], batch1.phases["step"]
    # The fp32 VAE alone: the UNet, the encoders and the network reach the device after
    # caching (trainer.run.place_for_steps; test_placement.py checks the trainer does so).
    assert caching["weights"] == 4 * full().parameter_counts()["vae"]
    assert caching["weights"] < weight_bytes(_config(), full(), encoders=False, vae=True) / 2
    assert caching["lora"] == caching["optimizer"] == caching["gradients"] == 0
    assert 2 * sum(caching.values()) < sum(step.values())  # a batch-1 step holds far more
    assert batch1.phase == "step" and {k: batch1.parts[k] for k in PARTS} == step
    four = estimate_footprint(_config(train_batch_size=1, vae_batch_size=4), full())
    assert four.phases["caching_latents"]["activations"] == pytest.approx(
        4 * caching["activations"]
    )
    # Nothing cached, no caching phase: the step is the peak.
    plain = estimate_footprint(_config(train_batch_size=1, cache_latents=False), full())
    assert set(plain.phases) == {"step"} and plain.phase == "step"


def test_caching_text_keeps_the_encoders_until_their_outputs_are_cached():
    cached = _config(text_encoder_lr=0, shuffle_caption=False, sdxl_cache_text_encoder_outputs=True)
    footprint = estimate_footprint(cached, full())
    text, step = footprint.phases["caching_text"], footprint.phases["step"]
    counts = full().parameter_counts()
    encoders = 2 * (counts["text_encoder"] + counts["text_encoder_2"]) + 8 * 2 * 77
    assert text["weights"] - step["weights"] == encoders
    assert 0 < text["activations"] < step["activations"]


# Bytes of state per trained value for a large weight, as docs/estimates.md gives them.
PER_VALUE = {"AdamW": 8, "AdamW8bit": 2.03, "PagedAdamW8bit": 2.03, "PagedAdamW32bit": 8,
             "Lion": 4, "Lion8bit": 1.02, "PagedLion8bit": 1.02, "SGDNesterov": 4,
             "SGDNesterov8bit": 1.02, "DAdaptLion": 8, "DAdaptAdam": 12, "DAdaptSGD": 12,
             "DAdaptAdaGrad": 12, "DAdaptAdan": 20, "DAdaptAdanIP": 20}  # fmt: skip


@pytest.mark.parametrize(("name", "per_value"), PER_VALUE.items())
def test_optimizer_bytes_per_value_are_the_documented_ones(name: str, per_value: float):
    config = _config(optimizer=name)
    n = 1024 * 1024
    assert optimizer_bytes(config, [((1024, 1024), False)]) / n == pytest.approx(per_value, 0.01)


def test_paged_state_is_counted_on_the_device_with_a_note():
    paged, plain = _config(optimizer="PagedAdamW8bit"), _config(optimizer="AdamW8bit")
    assert _step(paged)["optimizer"] == _step(plain)["optimizer"] > 0
    assert any("host memory" in note for note in memory_notes(paged))
    assert memory_notes(plain) == []


def test_masked_loss_holds_the_batch_mask_at_the_peak():
    plain = _step(_config())["activations"]
    masked = _step(_config(masked_loss=True))["activations"]
    assert masked - plain == 3 * 128 * 128 * 4  # the seed's (3, 1, h, w) fp32 mask at 1024²
