"""``fp8_base``: the frozen UNet and text-encoder weights held as float8_e4m3fn.

sd-scripts (``train_network.py: NetworkTrainer.train``) casts the frozen models to
fp8 and relies on autocast to upcast each weight inside the ops that support it.
diffusers' layerwise casting does that explicitly: every Linear / Conv / Embedding
keeps its weight in fp8 and is cast to the compute dtype only for its own forward
pass, so training works on any device (torch has no fp8 matmul on CPUs) and under
any op. Norm layers stay in the compute dtype (diffusers' default skip list), as do
the text encoders' token and position embeddings (sd-scripts keeps those out of fp8
too).

It is applied after the LoRA is injected and skips peft's adapter layers, so the
trained LoRA weights stay fp32.
"""

from __future__ import annotations

import torch
from diffusers.hooks import apply_layerwise_casting
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from peft.tuners.lora import LoraLayer

from trainer.models.loading import SdxlModel

FP8 = torch.float8_e4m3fn
_TEXT_SKIP = (*DEFAULT_SKIP_MODULES_PATTERN, "embeddings", *LoraLayer.adapter_layer_names)


def store_base_in_fp8(model: SdxlModel, compute_dtype: torch.dtype) -> None:
    """Store the frozen UNet and both text encoders in fp8, computing in ``compute_dtype``."""
    # The UNet's own method adds its model-specific skips and peft's adapter layers.
    model.unet.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=compute_dtype)
    for encoder in (model.text_encoder, model.text_encoder_2):
        apply_layerwise_casting(encoder, FP8, compute_dtype, skip_modules_pattern=_TEXT_SKIP)
