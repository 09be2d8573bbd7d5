"""The memory model's network tensors (trainer/estimate/networks.py) against the networks
the trainer's own ``build_network`` makes on the meta-device miniature SDXL, for every
``LoRA_type`` of the kohya_ss GUI; and what a heavy type means at full size."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from tests.factories import seed_payload
from trainer.config import TrainingConfig, parse_payload
from trainer.config.keys_core import LORA_TYPES
from trainer.estimate.architecture import Architecture
from trainer.estimate.fake import prepared_meta_model
from trainer.estimate.model import estimate_footprint
from trainer.estimate.networks import butterfly, factorization, network_tensors
from trainer.lora.lycoris import LycorisNetwork
from trainer.models.configs import SDXL_BASE_CONFIG

SMALL = {"max_resolution": "64,64", "min_bucket_reso": 64, "network_dim": 8, "network_alpha": 4}
# Options per type where the seed's own don't build (or don't vary what is counted).
OPTIONS: dict[str, dict[str, object]] = {
    "Kohya DyLoRA": {"conv_dim": 8, "unit": 4},
    "LyCORIS/DyLoRA": {"conv_dim": 4, "unit": 2},
    "LyCORIS/BOFT": {"conv_dim": 16, "network_dim": 16, "rescaled": True},
    "LyCORIS/LoKr": {"factor": 4, "network_dim": 2, "use_scalar": True},
    "LyCORIS/LoHa": {"use_tucker": True, "conv_dim": 4},
    "LyCORIS/LoCon": {"LyCORIS_preset": "attn-only"},
    "LyCORIS/Diag-OFT": {"LyCORIS_preset": "unet-convblock-only", "conv_dim": 8},
}


def _config(lora_type: str, **overrides: object) -> TrainingConfig:
    payload = {**seed_payload(), **SMALL, "LoRA_type": lora_type, **OPTIONS.get(lora_type, {})}
    return parse_payload({**payload, **overrides}).config


@cache
def _tiny(folder: Path) -> Architecture:
    return Architecture.from_config_dir(folder)


def _built(config: TrainingConfig, folder: Path) -> tuple[Counter, int]:
    """The built network's tensor shapes, and its trainable values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = prepared_meta_model(config, folder).network
    parameters = list(network.parameters())
    shapes = Counter(math.prod(p.shape) for p in parameters)
    return shapes, sum(p.numel() for p in parameters if p.requires_grad)


BUILT_ON_META = [t for t in LORA_TYPES if t not in ("LyCORIS/Native Fine-Tuning", "LoCon")]


@pytest.mark.parametrize("lora_type", BUILT_ON_META)
def test_every_network_types_tensors_are_the_built_networks(lora_type: str, tiny_config_dir):
    config = _config(lora_type)
    modelled = network_tensors(config, _tiny(tiny_config_dir))
    shapes, trainable = _built(config, tiny_config_dir)
    counted: Counter[int] = Counter()
    for tensor in modelled:
        counted[math.prod(tensor.shape)] += tensor.count
    assert counted == shapes
    assert sum(t.numel for t in modelled if t.trainable) == trainable


def test_native_fine_tuning_trains_a_copy_of_every_locon_layer(tiny_config_dir):
    # FullModule copies its layer's weight (zeros_like), which meta tensors refuse: the same
    # preset's LoCon network names the layers, whose weights and biases it copies.
    locon = _config("LyCORIS/LoCon", LyCORIS_preset="full", conv_dim=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = prepared_meta_model(locon, tiny_config_dir).network
    assert isinstance(network, LycorisNetwork)
    layers = [module.org_module[0] for module in network.library.unet_loras] + [
        module.org_module[0] for module in network.library.text_encoder_loras
    ]
    copied = sum(p.numel() for layer in layers for p in layer.parameters())
    full = network_tensors(_config("LyCORIS/Native Fine-Tuning", conv_dim=4),
                           _tiny(tiny_config_dir))  # fmt: skip
    assert sum(t.numel for t in full if t.trainable) == copied


def test_lycoris_factorizations_are_the_librarys():
    from lycoris.functional.general import factorization as library_factorization
    from lycoris.modules.boft import butterfly_factor

    for dimension in (320, 640, 1280, 2048, 5120, 10240, 768, 77, 127):
        for factor in (-1, 1, 2, 4, 8, 16, 32):
            assert factorization(dimension, factor) == library_factorization(dimension, factor)
    for dimension in (320, 640, 1280, 5120):
        for factor in (16, 32, 64):
            assert butterfly(dimension, factor) == butterfly_factor(dimension, factor)


def test_native_fine_tuning_of_full_sdxl_needs_more_than_a_16_gb_card():
    arch = Architecture.from_config_dir(SDXL_BASE_CONFIG)
    config = parse_payload({**seed_payload(), "LoRA_type": "LyCORIS/Native Fine-Tuning"}).config
    footprint = estimate_footprint(config, arch)
    trained = sum(t.numel for t in network_tensors(config, arch) if t.trainable)
    assert trained > 2.5e9  # every targeted weight of the UNet and both encoders
    # fp32 copy and gradient (8 bytes) and AdamW8bit's two 8-bit moments (about 2 bytes).
    assert footprint.parts["lora"] + footprint.parts["gradients"] >= 8 * trained * 0.99
    assert footprint.parts["optimizer"] == pytest.approx(2 * trained, rel=0.02)
    assert footprint.device_bytes > 16 * 2**30
