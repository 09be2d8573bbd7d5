"""Which layers get a LoRA module, and at which rank (sd-scripts ``networks/lora.py``:
``LoRANetwork.__init__`` and its ``create_modules``).

Standard: every Linear inside the UNet's Transformer2DModel blocks and the text
encoders' self-attention / MLP projections, all at ``network_dim`` /
``network_alpha``.

Kohya LoCon (``LoRA_type: "Kohya LoCon"``, ``conv_dim``/``conv_alpha`` in
``network_args``) adds every Linear and Conv2d inside the UNet's
``ResnetBlock2D``, ``Downsample2D`` and ``Upsample2D`` modules, found by class
name as sd-scripts does: the Linear (``time_emb_proj``) and 1×1 convs
(``conv_shortcut``) take ``network_dim``/``network_alpha``, the 3×3 convs
(``conv1``, ``conv2``, the down/upsampler ``conv``) take ``conv_dim``/``conv_alpha``.
``conv_dim`` 0 leaves the 3×3 convs out; ``conv_alpha`` 0 means alpha = rank,
as ``LoRAModule`` reads it.

Per-block ranks (``block_dims`` ..., ``trainer.lora.blocks``) and a network built
from a file (``dim_from_weights``) give each module its own rank: those are
explicit targets, one exact path per module.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from trainer.lora.blocks import BlockPlan, block_index
from trainer.models.ldm_names import unet_to_ldm

STANDARD = "Standard"
LOCON = "Kohya LoCon"

UNET_TARGETS = (
    r".*attentions\.\d+\.(proj_in|proj_out"
    r"|transformer_blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
    r"|transformer_blocks\.\d+\.ff\.net\.(0\.proj|2))"
)
TEXT_ENCODER_TARGETS = r".*layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
CONV_PARENTS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")


@dataclass(frozen=True)
class ConvRank:
    """Kohya LoCon's rank and alpha of the 3×3 convolutions."""

    rank: int
    alpha: float


@dataclass(frozen=True)
class Targets:
    """A peft target regex plus per-module ranks and alphas (peft's rank/alpha patterns)."""

    modules: str
    ranks: dict[str, int]
    alphas: dict[str, float]


Layer = torch.nn.Linear | torch.nn.Conv2d


def _conv_part_layers(unet: torch.nn.Module) -> dict[str, Layer]:
    """Every Linear / Conv2d inside a resnet, downsampler or upsampler, by full name."""
    found: dict[str, Layer] = {}
    for name, module in unet.named_modules():
        if type(module).__name__ not in CONV_PARENTS:
            continue
        for child, layer in module.named_modules(prefix=name):
            if isinstance(layer, torch.nn.Linear | torch.nn.Conv2d):
                found[child] = layer
    return found


def _is_3x3(layer: Any) -> bool:
    return isinstance(layer, torch.nn.Conv2d) and tuple(layer.kernel_size) != (1, 1)


def unet_targets(unet: torch.nn.Module, conv: ConvRank | None) -> Targets:
    """Standard's targets, plus Kohya LoCon's resnet / sampler layers when ``conv`` is set."""
    if conv is None:
        return Targets(UNET_TARGETS, {}, {})
    layers = _conv_part_layers(unet)
    three = [name for name, layer in layers.items() if _is_3x3(layer)]
    chosen = [name for name in layers if conv.rank or name not in three]
    names = "|".join(re.escape(name) for name in chosen)
    # peft reads a pattern key as "(.*\.)?(key)$": an escaped full name is that module only.
    three_kept = [re.escape(name) for name in three if conv.rank]
    alpha = conv.alpha or float(conv.rank)
    return Targets(
        f"(?:{UNET_TARGETS})|(?:{names})" if names else UNET_TARGETS,
        dict.fromkeys(three_kept, conv.rank),
        dict.fromkeys(three_kept, alpha),
    )


def unet_candidates(unet: torch.nn.Module, conv_blocks: bool) -> dict[str, Layer]:
    """The layers sd-scripts may target: the transformers' Linears, plus the resnet and
    sampler layers when ``conv_blocks`` (``UNET_TARGET_REPLACE_MODULE_CONV2D_3X3``)."""
    found: dict[str, Layer] = {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear) and re.fullmatch(UNET_TARGETS, name)
    }
    if conv_blocks:
        found.update(_conv_part_layers(unet))
    return found


def text_candidates(encoder: torch.nn.Module) -> dict[str, Layer]:
    return {
        name: module
        for name, module in encoder.named_modules()
        if isinstance(module, torch.nn.Linear) and re.fullmatch(TEXT_ENCODER_TARGETS, name)
    }


def kohya_unet_name(path: str) -> str:
    return "lora_unet_" + unet_to_ldm(path).replace(".", "_")


def block_unet_ranks(unet: torch.nn.Module, plan: BlockPlan) -> dict[str, tuple[int, float]]:
    """Each UNet layer's (rank, alpha) under per-block settings (``create_modules`` with
    ``block_dims``): Linear and 1×1 layers take ``block_dims``, 3×3 ``conv_block_dims``;
    a block at rank 0 gets no module."""
    ranks: dict[str, tuple[int, float]] = {}
    for path, layer in unet_candidates(unet, plan.targets_conv_blocks).items():
        chosen = plan.unet_rank(block_index(kohya_unet_name(path)), _is_3x3(layer))
        if chosen is not None:
            ranks[path] = chosen
    return ranks


def explicit_targets(ranks: dict[str, tuple[int, float]]) -> Targets:
    """peft targets for exactly these module paths, each at its own rank and alpha."""
    if not ranks:
        return Targets("", {}, {})
    by_rank: dict[int, list[str]] = defaultdict(list)
    by_alpha: dict[float, list[str]] = defaultdict(list)
    for path, (rank, alpha) in ranks.items():
        by_rank[rank].append(re.escape(path))
        by_alpha[alpha].append(re.escape(path))
    return Targets(
        "|".join(re.escape(path) for path in ranks),
        {"|".join(names): rank for rank, names in by_rank.items()},
        {"|".join(names): alpha for alpha, names in by_alpha.items()},
    )
