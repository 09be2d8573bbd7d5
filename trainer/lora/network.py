"""LoRA on SDXL with peft, named the way Kohya names it.

Targets (sd-scripts ``networks/lora.py: LoRANetwork.__init__``; ``trainer.lora.targets``):
every Linear inside the UNet's Transformer2DModel blocks (``proj_in``/``proj_out``,
both attentions' ``to_q/k/v/out.0``, ``ff.net.0.proj``, ``ff.net.2``: 722 modules
on SDXL), both text encoders' self-attention q/k/v/out and MLP fc1/fc2 (264
modules), and with Kohya LoCon the UNet's resnet and sampler layers. peft's
initialisation (Kaiming-uniform down, zero up), scaling (alpha / r) and conv
layout (down: the base conv's kernel, up: 1×1) are Kohya's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from trainer.lora.targets import TEXT_ENCODER_TARGETS, ConvRank, Targets, unet_targets
from trainer.models.ldm_names import text_model_path, unet_to_ldm

ADAPTER = "default"


@dataclass
class LoraModule:
    """One Kohya LoRA module: its file name and the peft layer that trains it."""

    kohya_name: str
    layer: LoraLayer
    part: str  # "unet" or "textencoder"

    @property
    def down(self) -> torch.nn.Parameter:
        return cast(torch.nn.Parameter, self.layer.lora_A[ADAPTER].weight)

    @property
    def up(self) -> torch.nn.Parameter:
        return cast(torch.nn.Parameter, self.layer.lora_B[ADAPTER].weight)

    @property
    def rank(self) -> int:
        return int(self.layer.r[ADAPTER])

    @property
    def alpha(self) -> float:
        """This module's alpha (LoCon's 3×3 convs have their own)."""
        return float(self.layer.lora_alpha[ADAPTER])


@dataclass
class LoraNetwork:
    rank: int
    alpha: float
    modules: list[LoraModule] = field(default_factory=list)

    def parameters(self, part: str | None = None) -> Iterator[torch.nn.Parameter]:
        for module in self.modules:
            if part is None or module.part == part:
                yield module.down
                yield module.up

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def by_name(self) -> dict[str, LoraModule]:
        return {module.kohya_name: module for module in self.modules}


def _inject(model: torch.nn.Module, targets: Targets, rank: int, alpha: float) -> None:
    # peft types lora_alpha as int, but scales by alpha / r with any number, as Kohya does.
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]
        target_modules=targets.modules,
        rank_pattern=targets.ranks,
        alpha_pattern=targets.alphas,
        lora_dropout=0.0,
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)


def _collect(
    model: torch.nn.Module, prefix: str, to_kohya_path: Callable[[str], str], part: str
) -> list[LoraModule]:
    found = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            kohya = f"{prefix}_{to_kohya_path(name).replace('.', '_')}"
            found.append(LoraModule(kohya, module, part))
    return found


def apply_lora(
    unet: torch.nn.Module | None,
    text_encoders: tuple[torch.nn.Module, torch.nn.Module] | None,
    rank: int,
    alpha: float,
    conv: ConvRank | None = None,
) -> LoraNetwork:
    """Inject LoRA into the parts being trained; None skips a part entirely,
    so its ``lora_*`` keys never appear in the file. ``conv`` makes it Kohya LoCon."""
    network = LoraNetwork(rank=rank, alpha=alpha)
    if unet is not None:
        _inject(unet, unet_targets(unet, conv), rank, alpha)
        network.modules += _collect(unet, "lora_unet", unet_to_ldm, "unet")
    if text_encoders is not None:
        for index, encoder in enumerate(text_encoders, start=1):
            _inject(encoder, Targets(TEXT_ENCODER_TARGETS, {}, {}), rank, alpha)
            network.modules += _collect(encoder, f"lora_te{index}", text_model_path, "textencoder")
    for parameter in network.parameters():
        # Trainable weights stay fp32 whatever the frozen base's dtype (mixed precision).
        parameter.data = parameter.data.float()
        parameter.requires_grad_(True)
    return network
