"""A miniature SDXL: the real topology at toy widths, random weights.

Tests, benchmarks and ``lorabox models add-demo`` need a base model that loads
through exactly the code path a real SDXL checkpoint takes (single-file
original layout + a config folder), yet trains in well under a second a step
on a CPU. Widths are narrow (UNet 32/64/128, text encoders 32 and 64, VAE
16/32) but every block type, both text encoders, ``text_time`` conditioning
and the four-level VAE are SDXL's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from trainer.models.configs import SDXL_BASE_CONFIG, read_component_config
from trainer.models.ldm_checkpoint import sdxl_checkpoint
from trainer.storage import atomic_path

TE1_WIDTH, TE2_WIDTH = 32, 64
_TIME_EMBED_DIM = 16


def tiny_configs() -> dict[str, dict[str, Any]]:
    """Component configs: SDXL base's, with the widths shrunk."""
    unet = read_component_config(SDXL_BASE_CONFIG, "unet")
    unet.update(
        block_out_channels=[32, 64, 128],
        attention_head_dim=[2, 4, 8],
        transformer_layers_per_block=[1, 1, 2],
        cross_attention_dim=TE1_WIDTH + TE2_WIDTH,
        addition_time_embed_dim=_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TE2_WIDTH + 6 * _TIME_EMBED_DIM,
        norm_num_groups=16,
        sample_size=16,
    )
    vae = read_component_config(SDXL_BASE_CONFIG, "vae")
    vae.update(block_out_channels=[16, 16, 32, 32], norm_num_groups=8, sample_size=128)
    text_encoder = read_component_config(SDXL_BASE_CONFIG, "text_encoder")
    text_encoder.update(
        hidden_size=TE1_WIDTH, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=3, projection_dim=TE1_WIDTH,
    )  # fmt: skip
    text_encoder_2 = read_component_config(SDXL_BASE_CONFIG, "text_encoder_2")
    text_encoder_2.update(
        hidden_size=TE2_WIDTH, intermediate_size=128, num_attention_heads=4,
        num_hidden_layers=3, projection_dim=TE2_WIDTH,
    )  # fmt: skip
    for encoder in (text_encoder, text_encoder_2):
        encoder.pop("torch_dtype", None)  # build in fp32; the checkpoint is cast on save
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "scheduler": read_component_config(SDXL_BASE_CONFIG, "scheduler"),
    }


def build_tiny_components(seed: int = 0) -> dict[str, torch.nn.Module]:
    configs = tiny_configs()
    torch.manual_seed(seed)
    return {
        "unet": UNet2DConditionModel.from_config(configs["unet"]),
        "vae": AutoencoderKL.from_config(configs["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])),
        "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"])),
    }


def write_config_folder(dest: Path, configs: dict[str, dict[str, Any]]) -> None:
    shutil.copyfile(SDXL_BASE_CONFIG / "model_index.json", dest / "model_index.json")
    for component, config in configs.items():
        name = "scheduler_config.json" if component == "scheduler" else "config.json"
        (dest / component).mkdir(parents=True, exist_ok=True)
        (dest / component / name).write_text(json.dumps(config, indent=2) + "\n")


def write_tiny_sdxl(models_dir: Path, name: str = "tiny-sdxl", seed: int = 0) -> Path:
    """Write ``NAME.safetensors`` (original single-file layout, fp16) and its
    ``NAME.config/`` folder into ``models_dir``; return the checkpoint path."""
    models_dir.mkdir(parents=True, exist_ok=True)
    components = build_tiny_components(seed)
    state = sdxl_checkpoint(
        components["unet"],
        components["vae"],
        components["text_encoder"],
        components["text_encoder_2"],
    )
    state = {key: value.to(torch.float16) for key, value in state.items()}
    config_dir = models_dir / f"{name}.config"
    if config_dir.exists():
        shutil.rmtree(config_dir)
    config_dir.mkdir()
    write_config_folder(config_dir, tiny_configs())
    checkpoint = models_dir / f"{name}.safetensors"
    with atomic_path(checkpoint) as tmp:
        save_file(state, str(tmp), metadata={"lorabox": "miniature SDXL, random weights"})
    return checkpoint
