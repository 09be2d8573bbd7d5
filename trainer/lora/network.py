"""LoRA on SDXL with peft, named the way Kohya names it; the interface every network type keeps.

Targets (sd-scripts ``networks/lora.py: LoRANetwork.__init__``; ``trainer.lora.targets``):
every Linear inside the UNet's Transformer2DModel blocks (``proj_in``/``proj_out``,
both attentions' ``to_q/k/v/out.0``, ``ff.net.0.proj``, ``ff.net.2``: 722 modules
on SDXL), both text encoders' self-attention q/k/v/out and MLP fc1/fc2 (264
modules), and with Kohya LoCon the UNet's resnet and sampler layers. peft's
initialisation (Kaiming-uniform down, zero up), scaling (alpha / r) and conv
layout (down: the base conv's kernel, up: 1×1) are Kohya's. Per-block ranks come
from ``trainer.lora.blocks``; LoRA-FA (``networks/lora_fa.py``) is the same network
with a frozen, normal-initialised down-projection.

:class:`LoraNetwork` is also what the trainer holds for the other types
(``trainer.lora.dylora``, ``trainer.lora.lycoris``): they override how weights are
listed, saved, loaded and max-normed, and keep ``modules`` empty because their
tensors are not ``lora_down``/``lora_up`` pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from trainer.errors import TrainerError
from trainer.lora.blocks import block_index
from trainer.lora.kohya_file import tensor_hashes
from trainer.lora.regularizers import MaxNormReport, kohya_max_norm
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
        """This module's alpha (LoCon's 3×3 convs and per-block ranks have their own)."""
        return float(self.layer.lora_alpha[ADAPTER])


@dataclass
class LoraNetwork:
    rank: int
    alpha: float
    modules: list[LoraModule] = field(default_factory=list)
    # sd-scripts' 23 per-block LR multipliers (networks/lora.py: set_block_lr_weight), or None.
    block_lr_weights: tuple[float, ...] | None = None

    def parameters(self, part: str | None = None) -> Iterator[torch.nn.Parameter]:
        """Every weight of the network (trained or frozen), of one part or all."""
        for module in self.modules:
            if part is None or module.part == part:
                yield module.down
                yield module.up

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Every weight under a stable name (``<kohya name>.<tensor>``), for training states."""
        for module in self.modules:
            yield f"{module.kohya_name}.lora_down.weight", module.down
            yield f"{module.kohya_name}.lora_up.weight", module.up

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The weights as trained (their own dtype): what a training state stores. Unlike
        ``file_tensors``, exact for every type (a LyCORIS file can hold derived tensors)."""
        return {name: parameter.detach() for name, parameter in self.named_parameters()}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put back what ``state_tensors`` gave; the names and shapes must be this network's."""
        own = dict(self.named_parameters())
        missing = sorted(own.keys() - tensors.keys())
        unknown = sorted(tensors.keys() - own.keys())
        if missing or unknown:
            name = (missing or unknown)[0]
            what = "lacks" if missing else "has no place for"
            raise ValueError(
                f"the state {what} {name} ({len(missing) + len(unknown)} names differ)"
            )
        for name, parameter in own.items():
            saved = tensors[name]
            if saved.shape != parameter.shape:
                raise ValueError(f"{name} has shape {tuple(saved.shape)}")
            parameter.copy_(saved)

    def trainable(self, part: str | None = None) -> list[torch.nn.Parameter]:
        """What the optimizer steps (LoRA-FA leaves its frozen lora_down out)."""
        return [p for p in self.parameters(part) if p.requires_grad]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def by_name(self) -> dict[str, LoraModule]:
        return {module.kohya_name: module for module in self.modules}

    def unet_blocks(self) -> dict[int, list[torch.nn.Parameter]]:
        """The UNet's trainable weights by sd-scripts block (``get_block_index``), as
        ``LoRANetwork.prepare_optimizer_params`` groups them for block LRs: in block order,
        which is sd-scripts' module order (input, middle, output; diffusers lists up
        before mid)."""
        blocks: dict[int, list[torch.nn.Parameter]] = {}
        for module in self.modules:
            if module.part == "unet":
                params = [p for p in (module.down, module.up) if p.requires_grad]
                blocks.setdefault(block_index(module.kohya_name), []).extend(params)
        return dict(sorted(blocks.items()))

    def file_tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The file's tensors, laid out as ``LoRANetwork.save_weights`` writes them."""
        state: dict[str, torch.Tensor] = {}
        for module in self.modules:
            name = module.kohya_name
            state[f"{name}.lora_down.weight"] = module.down.detach().to("cpu", dtype)
            state[f"{name}.lora_up.weight"] = module.up.detach().to("cpu", dtype)
            state[f"{name}.alpha"] = torch.tensor(module.alpha).to(dtype)
        return {key: value.contiguous() for key, value in state.items()}

    def file_hashes(
        self, state: dict[str, torch.Tensor], metadata: dict[str, str]
    ) -> dict[str, str]:
        return tensor_hashes(state, metadata)

    def load_file(self, tensors: dict[str, torch.Tensor], file_name: str) -> None:
        """``network_weights``: every module of the file must exist here with the same
        shapes (sd-scripts loads with ``strict=False`` and skips a mismatch silently)."""
        modules = self.by_name()
        unknown = sorted({key.split(".")[0] for key in tensors} - modules.keys())
        if unknown:
            raise TrainerError(
                f"network_weights {file_name!r} has {len(unknown)} modules this network lacks "
                f"(e.g. {unknown[0]}): train the same parts (unet_lr / text_encoder_lr) and "
                "the same LoRA_type as that file"
            )
        with torch.no_grad():
            for name, module in modules.items():
                for part, parameter in (("lora_down", module.down), ("lora_up", module.up)):
                    key = f"{name}.{part}.weight"
                    if key in tensors:
                        _copy_checked(parameter, tensors[key], key, file_name)

    def apply_max_norm(self, max_norm: float) -> MaxNormReport:
        return kohya_max_norm(self.modules, max_norm)


def _copy_checked(parameter: torch.Tensor, saved: torch.Tensor, key: str, file_name: str) -> None:
    if saved.shape != parameter.shape:
        raise TrainerError(
            f"network_weights {file_name!r}: {key} has shape {tuple(saved.shape)}, expected "
            f"{tuple(parameter.shape)} (set network_dim to the file's rank, or dim_from_weights)"
        )
    parameter.copy_(saved.to(parameter.dtype))


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


def inject_lora(
    unet: torch.nn.Module | None,
    text_encoders: tuple[torch.nn.Module, torch.nn.Module] | None,
    rank: int,
    alpha: float,
    unet_plan: Targets | None = None,
    text_plan: tuple[Targets, Targets] | None = None,
) -> LoraNetwork:
    """Inject LoRA into the parts being trained at the given targets (default: Standard's)."""
    network = LoraNetwork(rank=rank, alpha=alpha)
    if unet is not None:
        plan = unet_plan or unet_targets(unet, None)
        if plan.modules:  # every block at rank 0 leaves nothing to inject
            _inject(unet, plan, rank, alpha)
        network.modules += _collect(unet, "lora_unet", unet_to_ldm, "unet")
    if text_encoders is not None:
        for index, encoder in enumerate(text_encoders, start=1):
            plan = text_plan[index - 1] if text_plan else Targets(TEXT_ENCODER_TARGETS, {}, {})
            if plan.modules:
                _inject(encoder, plan, rank, alpha)
            network.modules += _collect(encoder, f"lora_te{index}", text_model_path, "textencoder")
    for parameter in network.parameters():
        # Trainable weights stay fp32 whatever the frozen base's dtype (mixed precision).
        parameter.data = parameter.data.float()
        parameter.requires_grad_(True)
    return network


def apply_lora(
    unet: torch.nn.Module | None,
    text_encoders: tuple[torch.nn.Module, torch.nn.Module] | None,
    rank: int,
    alpha: float,
    conv: ConvRank | None = None,
) -> LoraNetwork:
    """Inject LoRA into the parts being trained; None skips a part entirely,
    so its ``lora_*`` keys never appear in the file. ``conv`` makes it Kohya LoCon."""
    plan = unet_targets(unet, conv) if unet is not None else None
    return inject_lora(unet, text_encoders, rank, alpha, plan)


@torch.no_grad()
def make_lora_fa(network: LoraNetwork) -> None:
    """LoRA-FA (``networks/lora_fa.py: LoRAModule``): lora_down drawn from
    N(0, 2 / (in + r)) and frozen; only lora_up trains (``get_trainable_params``)."""
    for module in network.modules:
        down = module.down
        fan_in = down.shape[1]  # in_features, or a conv's in_channels (not × kernel)
        down.normal_(0.0, math.sqrt(2.0 / (fan_in + module.rank)))
        down.requires_grad_(False)


def before_each_forward(root: torch.nn.Module, action: Callable[[bool], None]) -> None:
    """Call ``action(root.training)`` before every forward pass of a whole model.

    Hooked on the model, not a block: gradient checkpointing re-runs blocks, so what
    ``action`` sets (a DyLoRA rank, the modules' train/eval mode) holds for the
    recomputation too, and sampling (``unet.eval()``) switches it with the model.
    """

    def hook(module: torch.nn.Module, _args: object) -> None:
        action(module.training)  # returns nothing: a pre-hook's value would replace the input

    root.register_forward_pre_hook(hook)
