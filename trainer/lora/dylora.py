"""Kohya DyLoRA: sd-scripts ``networks/dylora.py``, written for the diffusers SDXL.

What sd-scripts does (``DyLoRAModule``), and this module with it:

* a module of rank r keeps r separate rows: ``lora_A`` r tensors (1, in) (a 3×3 conv:
  (1, in, 3, 3)), ``lora_B`` r tensors (out, 1) (3×3: (out, 1, 1, 1)); down Kaiming-uniform
  (a = √5), up zero; alpha 0 means alpha = r;
* every forward pass in training draws b uniformly from 0 … r-1, rounded down to a
  multiple of ``unit``; only rows b … b+unit-1 get gradients (sd-scripts flips their
  ``requires_grad``; here the others are detached, which gives the optimizer the same
  gradients without touching ``requires_grad``), the output always uses all r rows,
  scaled by ``alpha / r · sqrt(r / (b + unit))``;
* the file is a plain Kohya LoRA (``state_dict``: ``lora_down.weight`` = the rows
  stacked, ``lora_up.weight`` = the columns side by side, ``alpha``), usable whole
  or cut at any multiple of ``unit`` (``networks/extract_lora_from_dylora.py``).

Deliberate differences (docs/kohya-semantics.md, "Network types"):

* b is drawn once per model forward pass (``before_each_forward``) rather than per
  module call, so gradient checkpointing recomputes a block with the same b
  (sd-scripts draws again during the recomputation);
* outside training (sampling) the module uses its full rank with the file's scale
  alpha / r, where sd-scripts keeps drawing a random b;
* the text encoders' modules are named ``lora_te1_`` / ``lora_te2_`` as
  ``networks/lora.py`` names them for SDXL: ``DyLoRANetwork`` names both ``lora_te_``,
  so TE2's modules overwrite TE1's in its file.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from trainer.errors import TrainerError
from trainer.lora.network import LoraNetwork, _copy_checked, before_each_forward
from trainer.lora.regularizers import MaxNormReport
from trainer.lora.targets import Layer


class DyLoraModule(torch.nn.Module):
    """One DyLoRA module, attached to ``base`` as a forward hook (output + its update)."""

    def __init__(self, kohya_name: str, base: Layer, rank: int, alpha: float, unit: int) -> None:
        super().__init__()
        if rank % unit:
            raise TrainerError(f"{kohya_name}: rank {rank} is not a multiple of unit {unit}")
        self.kohya_name, self.rank, self.unit = kohya_name, rank, unit
        self.alpha = alpha or float(rank)
        self.scale = self.alpha / rank
        kernel: tuple[int, ...] = ()
        self.geometry: dict[str, Any] = {}  # a 3×3 conv's stride and padding, as sd-scripts
        if isinstance(base, torch.nn.Conv2d):
            in_dim, out_dim = base.in_channels, base.out_channels
            self.conv3x3 = tuple(base.kernel_size) == (3, 3)
            if self.conv3x3:
                kernel = tuple(base.kernel_size)
                self.geometry = {"stride": base.stride, "padding": base.padding}
        else:
            in_dim, out_dim, self.conv3x3 = base.in_features, base.out_features, False
        self.conv1x1 = isinstance(base, torch.nn.Conv2d) and not self.conv3x3
        ones = (1, 1) if self.conv3x3 else ()
        self.lora_A = torch.nn.ParameterList(torch.zeros(1, in_dim, *kernel) for _ in range(rank))
        self.lora_B = torch.nn.ParameterList(torch.zeros(out_dim, 1, *ones) for _ in range(rank))
        for row in self.lora_A:
            torch.nn.init.kaiming_uniform_(row, a=math.sqrt(5))
        self.first = rank - unit  # the trained rows start here; rank - unit = full rank
        self.to(base.weight.device)
        base.register_forward_hook(self._add)

    def draw(self, training: bool) -> None:
        """A new trained block for this forward pass (``DyLoRAModule.forward``)."""
        if not training:  # sampling: the full rank, and no draw from the run's random stream
            self.first = self.rank - self.unit
            return
        drawn = random.randint(0, self.rank - 1)
        self.first = drawn - drawn % self.unit

    def _stack(self, rows: torch.nn.ParameterList, dim: int) -> torch.Tensor:
        end = self.first + self.unit
        kept = [row if self.first <= i < end else row.detach() for i, row in enumerate(rows)]
        return torch.cat(kept, dim=dim)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        down, up = self._stack(self.lora_A, 0), self._stack(self.lora_B, 1)
        if not torch.is_autocast_enabled(x.device.type):  # full_fp16 on fp32 compute (a CPU)
            x = x.to(down.dtype)
        if self.conv3x3:
            out = F.conv2d(F.conv2d(x, down, **self.geometry), up)
        elif self.conv1x1:
            out = F.conv2d(F.conv2d(x, down[:, :, None, None]), up[:, :, None, None])
        else:
            out = F.linear(F.linear(x, down), up)
        return out * (self.scale * math.sqrt(self.rank / (self.first + self.unit)))

    def _add(self, _base: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self.update(args[0]).to(output.dtype)

    def file_tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``DyLoRAModule.state_dict``: rows stacked; a 1×1 conv gets its 1×1 axes back."""
        down = torch.cat(tuple(self.lora_A), 0).detach()
        up = torch.cat(tuple(self.lora_B), 1).detach()
        if self.conv1x1:
            down, up = down[:, :, None, None], up[:, :, None, None]
        return {
            f"{self.kohya_name}.lora_down.weight": down.to("cpu", dtype).contiguous(),
            f"{self.kohya_name}.lora_up.weight": up.to("cpu", dtype).contiguous(),
            f"{self.kohya_name}.alpha": torch.tensor(self.alpha).to(dtype),
        }

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor], file_name: str) -> None:
        """``DyLoRAModule._load_from_state_dict``: split the file's rows back."""
        down = tensors[f"{self.kohya_name}.lora_down.weight"]
        up = tensors[f"{self.kohya_name}.lora_up.weight"]
        if self.conv1x1:
            down, up = down.flatten(1), up.flatten(1)
        expected = (self.rank, *self.lora_A[0].shape[1:])
        if tuple(down.shape) != expected:
            raise TrainerError(
                f"network_weights {file_name!r}: {self.kohya_name}.lora_down.weight has shape "
                f"{tuple(down.shape)}, expected {expected} (set network_dim to the file's rank)"
            )
        for i, row in enumerate(self.lora_A):
            _copy_checked(row, down[i : i + 1], f"{self.kohya_name}.lora_down", file_name)
        for i, column in enumerate(self.lora_B):
            _copy_checked(column, up[:, i : i + 1], f"{self.kohya_name}.lora_up", file_name)


@dataclass
class DyLoraNetwork(LoraNetwork):
    """Kohya DyLoRA modules by part; ``modules`` stays empty (no single up/down pair)."""

    parts: dict[str, list[DyLoraModule]] = field(default_factory=dict)

    def dylora_modules(self, part: str | None = None) -> list[DyLoraModule]:
        return [m for name, ms in self.parts.items() if part in (None, name) for m in ms]

    def parameters(self, part: str | None = None) -> Iterator[torch.nn.Parameter]:
        for module in self.dylora_modules(part):
            yield from module.lora_A
            yield from module.lora_B

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Every row and column (``lora_A.<i>``, ``lora_B.<i>``) under its module's name."""
        for module in self.dylora_modules():
            for name, parameter in module.named_parameters():
                yield f"{module.kohya_name}.{name}", parameter

    def file_tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for module in self.dylora_modules():
            state.update(module.file_tensors(dtype))
        return state

    def load_file(self, tensors: dict[str, torch.Tensor], file_name: str) -> None:
        modules = {m.kohya_name: m for m in self.dylora_modules()}
        unknown = sorted({key.split(".")[0] for key in tensors} - modules.keys())
        if unknown:
            raise TrainerError(
                f"network_weights {file_name!r} has {len(unknown)} modules this network lacks "
                f"(e.g. {unknown[0]}): train the same parts and LoRA_type as that file"
            )
        for name, module in modules.items():
            if f"{name}.lora_down.weight" in tensors:
                module.load(tensors, file_name)

    def apply_max_norm(self, max_norm: float) -> MaxNormReport:
        # The config turns scale_weight_norms off for DyLoRA, as sd-scripts does.
        raise TrainerError("Kohya DyLoRA has no max-norm regularization (scale_weight_norms)")


Target = tuple[str, Layer, int, float]  # kohya name, layer, rank, alpha


def attach_dylora(
    groups: list[tuple[str, torch.nn.Module, list[Target]]], rank: int, alpha: float, unit: int
) -> DyLoraNetwork:
    """DyLoRA modules on the given layers, by (part, model root, layers); each root draws
    its modules' trained rows before every forward pass of that model."""
    network = DyLoraNetwork(rank=rank, alpha=alpha)
    for part, root, layers in groups:
        modules = [DyLoraModule(name, layer, r, a, unit) for name, layer, r, a in layers]
        network.parts.setdefault(part, []).extend(modules)
        before_each_forward(root, partial(_draw_all, modules))
    return network


def _draw_all(modules: list[DyLoraModule], training: bool) -> None:
    for module in modules:
        module.draw(training)
