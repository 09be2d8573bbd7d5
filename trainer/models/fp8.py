"""``fp8_base``: the frozen UNet and text-encoder weights held as float8_e4m3fn.

sd-scripts (``train_network.py: NetworkTrainer.train``) casts the frozen models to fp8 and
relies on autocast to upcast each weight inside the ops that support it: each op gets a
compute-dtype *copy*, and autograd keeps that copy for the backward. lorabox does the same
explicitly, per layer, so it works on any device (torch has no fp8 matmul on CPUs) and under
any op: every Linear / Conv / Embedding weight and bias is stored in fp8 behind a
``torch.nn.utils.parametrize`` parametrization that hands the layer a compute-dtype copy at
each access.

Why not diffusers' layerwise casting (``apply_layerwise_casting``), which selects the same
layers: it casts the module in place before its forward and back to fp8 after it
(``LayerwiseCastingHook``: ``module.to(dtype)`` swaps each parameter's data). A layer whose
backward needs its weight (a convolution's grad_input, on the way back to the LoRA layers
before it) then finds the fp8 data in its saved tensor: "expected scalar type BFloat16 but
found Float8_e4m3fn" at ``conv_out``. It is made for inference; a fresh copy per access is
what training needs (and what the memory model counts: ``trainer/estimate/model.py:
_fp8_copies``).

Which layers stay out is diffusers' choice for the UNet (its default skip patterns, the
model's ``_skip_layerwise_casting_patterns`` and peft's adapter layers, so the trained LoRA
weights stay fp32) and sd-scripts' for the text encoders (their token and position
embeddings stay out of fp8 too). It is applied after the LoRA is injected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from peft.tuners.lora import LoraLayer
from torch.nn.utils import parametrize

from trainer.models.loading import SdxlModel

FP8 = torch.float8_e4m3fn
# The layers diffusers' layerwise casting stores in low precision (diffusers.hooks._common).
LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
          torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d,
          torch.nn.Embedding)  # fmt: skip
_ADAPTERS = tuple(LoraLayer.adapter_layer_names)
_TEXT_SKIP = (*DEFAULT_SKIP_MODULES_PATTERN, "embeddings", *_ADAPTERS)


class ComputeCopy(torch.nn.Module):
    """The parametrization: the stored (fp8) tensor, as a new tensor in the compute dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored.to(self.dtype)


def _unet_skips(unet: torch.nn.Module) -> tuple[str, ...]:
    """The patterns diffusers' ``ModelMixin.enable_layerwise_casting`` skips by default."""
    own: list[str] = [*(getattr(unet, "_keep_in_fp32_modules", None) or [])]
    own += getattr(unet, "_skip_layerwise_casting_patterns", None) or []
    return (*DEFAULT_SKIP_MODULES_PATTERN, *own, *_ADAPTERS)


def _store(
    module: torch.nn.Module, compute_dtype: torch.dtype, skip: Sequence[str], name: str
) -> None:
    """Walk ``module`` as diffusers' ``_apply_layerwise_casting`` does: a module whose dotted
    name matches a skip pattern is left whole; each supported layer below is stored in fp8."""
    if any(re.search(pattern, name) for pattern in skip):
        return
    if isinstance(module, LAYERS):
        for tensor in ("weight", "bias"):
            if getattr(module, tensor, None) is None:
                continue
            parametrize.register_parametrization(module, tensor, ComputeCopy(compute_dtype),
                                                 unsafe=True)  # fmt: skip
            original = _original(module, tensor)
            original.data = original.data.to(FP8)
        return
    for child, submodule in module.named_children():
        _store(submodule, compute_dtype, skip, f"{name}.{child}" if name else child)


def store_base_in_fp8(model: SdxlModel, compute_dtype: torch.dtype) -> None:
    """Store the frozen UNet and both text encoders in fp8, computing in ``compute_dtype``."""
    _store(model.unet, compute_dtype, _unet_skips(model.unet), "")
    for encoder in (model.text_encoder, model.text_encoder_2):
        _store(encoder, compute_dtype, _TEXT_SKIP, "")


def stored_dtype(module: torch.nn.Module, tensor: str = "weight") -> torch.dtype:
    """The dtype ``tensor`` of ``module`` is held in (fp8 behind the parametrization)."""
    if parametrize.is_parametrized(module, tensor):
        return _original(module, tensor).dtype
    return getattr(module, tensor).dtype


def _original(module: torch.nn.Module, tensor: str) -> torch.Tensor:
    """The stored tensor behind a parametrization (``parametrizations.<name>.original``)."""
    parametrizations: torch.nn.ModuleDict = getattr(module, "parametrizations")  # noqa: B009
    return getattr(parametrizations[tensor], "original")  # noqa: B009
