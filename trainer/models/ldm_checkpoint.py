"""Write SDXL components as one single-file checkpoint in the original layout.

The inverse of what diffusers' ``from_single_file`` reads: ``model.diffusion_model.*``
(UNet), ``first_stage_model.*`` (VAE), ``conditioner.embedders.0.transformer.*``
(CLIP-L, Hugging Face layout) and ``conditioner.embedders.1.model.*`` (OpenCLIP
bigG layout: fused ``in_proj`` attention, transposed ``text_projection``).
Used to build miniature checkpoints that exercise the same loading path as
SDXL base and Pony Diffusion XL.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from trainer.models.ldm_names import (
    openclip_layer_to_ldm,
    text_model_path,
    unet_to_ldm,
    vae_to_ldm,
)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TE1_PREFIX = "conditioner.embedders.0.transformer."
TE2_PREFIX = "conditioner.embedders.1.model."

_VAE_ATTENTION_WEIGHT = re.compile(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$")


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def unet_entries(unet: nn.Module) -> dict[str, torch.Tensor]:
    return {UNET_PREFIX + unet_to_ldm(k): v for k, v in _tensors(unet).items()}


def vae_entries(vae: nn.Module) -> dict[str, torch.Tensor]:
    entries = {}
    for key, value in _tensors(vae).items():
        name = vae_to_ldm(key)
        # The original VAE's mid-block attention uses 1x1 convolutions.
        if _VAE_ATTENTION_WEIGHT.search(name):
            value = value.reshape(*value.shape, 1, 1)
        entries[VAE_PREFIX + name] = value
    return entries


def clip_l_entries(text_encoder: nn.Module) -> dict[str, torch.Tensor]:
    return {
        TE1_PREFIX + text_model_path(k): v
        for k, v in _tensors(text_encoder).items()
        if not k.endswith("position_ids")
    }


def openclip_entries(text_encoder: nn.Module) -> dict[str, torch.Tensor]:
    tensors = {text_model_path(k): v for k, v in _tensors(text_encoder).items()}
    out = {
        "token_embedding.weight": tensors.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": tensors.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": tensors.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": tensors.pop("text_model.final_layer_norm.bias"),
        "text_projection": tensors.pop("text_projection.weight").T.contiguous(),
    }
    layers = sorted(
        {
            int(m.group(1))
            for k in tensors
            if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))
        }
    )
    for i in layers:
        attn = f"text_model.encoder.layers.{i}.self_attn."
        for kind in ("weight", "bias"):
            fused = [tensors.pop(f"{attn}{proj}_proj.{kind}") for proj in ("q", "k", "v")]
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(fused)
    for key, value in tensors.items():
        if key.endswith("position_ids"):
            continue
        out[openclip_layer_to_ldm(key)] = value
    return {TE2_PREFIX + k: v for k, v in out.items()}


def sdxl_checkpoint(
    unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, text_encoder_2: nn.Module
) -> dict[str, torch.Tensor]:
    """All four components as one original-layout state dict."""
    return {
        **unet_entries(unet),
        **vae_entries(vae),
        **clip_l_entries(text_encoder),
        **openclip_entries(text_encoder_2),
    }
