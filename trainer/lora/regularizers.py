"""Kohya's regularizers inside the LoRA network (sd-scripts ``networks/lora.py``:
``LoRAModule.forward`` and ``LoRANetwork.apply_max_norm_regularization``).

peft's ``lora_dropout`` drops the layer's *input*; Kohya drops the ``lora_down``
*output*. So the three dropouts are a forward hook on each ``lora_down``
(peft's ``lora_A``), active only while the model is in training mode:

* ``network_dropout`` p: ``F.dropout(down(x), p)``;
* ``rank_dropout`` p: a Bernoulli(1 - p) mask per (sample, rank), the result
  scaled by 1 / (1 - p);
* ``module_dropout`` p: with probability p the whole branch is skipped for
  this forward (its output is zero, so the layer returns the base output).

``scale_weight_norms`` is the max-norm step after each optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from trainer.lora.network import LoraModule, LoraNetwork


@dataclass(frozen=True)
class Dropouts:
    network: float = 0.0
    rank: float = 0.0
    module: float = 0.0

    def any(self) -> bool:
        return bool(self.network or self.rank or self.module)


def drop_down_output(down: torch.Tensor, dropouts: Dropouts) -> torch.Tensor:
    """Kohya's dropouts applied to one ``lora_down`` output (rank on the last axis,
    or on axis 1 of a conv's (batch, rank, h, w) output)."""
    if dropouts.module and torch.rand(1).item() < dropouts.module:
        return torch.zeros_like(down)
    if dropouts.network:
        down = F.dropout(down, p=dropouts.network)
    if dropouts.rank:
        conv = down.dim() == 4
        rank = down.shape[1] if conv else down.shape[-1]
        keep = torch.rand(down.shape[0], rank, device=down.device) > dropouts.rank
        if conv:
            shape: tuple[int, ...] = (down.shape[0], rank, 1, 1)
        else:
            shape = (down.shape[0],) + (1,) * (down.dim() - 2) + (rank,)
        down = down * keep.view(shape).to(down.dtype) / (1.0 - dropouts.rank)
    return down


def _hook(dropouts: Dropouts) -> Callable[[torch.nn.Module, Any, torch.Tensor], torch.Tensor]:
    def hook(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return drop_down_output(output, dropouts) if module.training else output

    return hook


def install_dropouts(network: LoraNetwork, dropouts: Dropouts) -> int:
    """Hook every module's ``lora_down``; returns how many were hooked."""
    if not dropouts.any():
        return 0
    for module in network.modules:
        down_layer = module.layer.lora_A[next(iter(module.layer.lora_A))]
        down_layer.register_forward_hook(_hook(dropouts))
    return len(network.modules)


@dataclass(frozen=True)
class MaxNormReport:
    keys_scaled: int
    average_key_norm: float
    max_key_norm: float

    def as_log(self) -> dict[str, float]:
        return {
            "max_norm/keys_scaled": float(self.keys_scaled),
            "max_norm/average_key_norm": self.average_key_norm,
            "max_norm/max_key_norm": self.max_key_norm,
        }


def apply_max_norm(network: LoraNetwork, max_norm: float) -> MaxNormReport:
    """``scale_weight_norms`` after an optimizer step, as the network type defines it
    (Kohya LoRA below; LyCORIS: its ``apply_max_norm_regularization``)."""
    return network.apply_max_norm(max_norm)


@torch.no_grad()
def kohya_max_norm(modules: Sequence[LoraModule], max_norm: float) -> MaxNormReport:
    """Scale each module so that ||up @ down * alpha/r||_F <= max_norm.

    sd-scripts ``apply_max_norm_regularization``: n = max(||dW||, m/2),
    ratio = min(n, m)/n; when ratio != 1 both up and down are multiplied by
    sqrt(ratio). The reported norms are the ones after scaling. A conv's up is
    1×1, so flattening both gives the composed kernel's norm (sd-scripts' conv2d
    composition) for 1×1 and 3×3 downs alike.
    """
    scaled, norms = 0, []
    for module in modules:
        up, down = module.up, module.down
        delta = (up.float().flatten(1) @ down.float().flatten(1)) * (module.alpha / module.rank)
        norm = float(delta.norm())
        desired = min(max(norm, max_norm / 2), max_norm)
        ratio = desired / max(norm, max_norm / 2)
        if ratio != 1:
            scaled += 1
            up.mul_(math.sqrt(ratio))
            down.mul_(math.sqrt(ratio))
        norms.append(norm * ratio)
    if not norms:
        return MaxNormReport(0, 0.0, 0.0)
    return MaxNormReport(scaled, sum(norms) / len(norms), max(norms))
