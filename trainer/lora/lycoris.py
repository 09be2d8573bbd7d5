"""The LyCORIS types, trained by lycoris-lora itself as kohya_ss trains them.

kohya_ss runs ``sdxl_train_network.py --network_module lycoris.kohya`` with the
``network_args`` of ``trainer.lora.gui_args``; sd-scripts then calls
``lycoris.kohya.create_network`` (or ``create_network_from_weights`` with
``dim_from_weights``), ``apply_to`` and, every step, the network's forward hooks;
``save_weights`` writes ``network.state_dict()`` (``lora_unet_…`` with ``hada_w1_a``,
``lokr_w1``, ``oft_blocks``, … as each module defines it) with the run's metadata and
lycoris' own ``sshs_model_hash``. lorabox makes the same calls with the same text
arguments; the library sees the UNet as sd-scripts shapes it
(``trainer.lora.mirror``), so it picks the same layers under the same names.

What lorabox adds around the library: the modules move to the model's device with
fp32 weights (as every trainable weight here: mixed precision), they follow the
model's train / eval mode (sampling switches dropouts off), and ``network_weights``
must match the network module by module (the library loads with ``strict=False``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lycoris import kohya
from lycoris.modules.dylora import DyLoraModule
from lycoris.utils import precalculate_safetensors_hashes

from trainer.errors import TrainerError
from trainer.lora.gui_args import net_kwargs
from trainer.lora.mirror import sd_scripts_unet, text_model_root
from trainer.lora.network import LoraNetwork, before_each_forward
from trainer.lora.regularizers import MaxNormReport

if TYPE_CHECKING:
    from trainer.config.typed import TrainingConfig


@dataclass
class LycorisNetwork(LoraNetwork):
    """lycoris-lora's ``LycorisNetworkKohya``; ``modules`` stays empty (its tensors are
    the algorithm's own: ``hada_w1_a``, ``oft_blocks``, ...)."""

    library: Any = None  # lycoris.kohya.LycorisNetworkKohya
    parts: dict[str, list[torch.nn.Module]] = field(default_factory=dict)

    def parameters(self, part: str | None = None) -> Iterator[torch.nn.Parameter]:
        for name, modules in self.parts.items():
            if part in (None, name):
                for module in modules:
                    yield from module.parameters()

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Each module's own parameters under its ``lora_name`` (the base layer it wraps is
        kept outside the module by the library, so it is not among them)."""
        for modules in self.parts.values():
            for module in modules:
                for name, parameter in module.named_parameters():
                    yield f"{module.lora_name}.{name}", parameter

    def file_tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``LycorisNetworkKohya.save_weights``: its ``state_dict`` cast to ``dtype``."""
        state = self.library.state_dict()
        return {key: value.detach().to("cpu", dtype).contiguous() for key, value in state.items()}

    def file_hashes(
        self, state: dict[str, torch.Tensor], metadata: dict[str, str]
    ) -> dict[str, str]:
        # save_weights writes lycoris' own sshs_model_hash and no legacy hash.
        return {"sshs_model_hash": precalculate_safetensors_hashes(state)}

    def load_file(self, tensors: dict[str, torch.Tensor], file_name: str) -> None:
        """``load_weights`` (``load_state_dict(strict=False)``), after checking that every
        tensor of the file has its place here, and then that each was taken."""
        expected = {key: value.shape for key, value in self.library.state_dict().items()}
        for key, value in tensors.items():
            if key not in expected:
                raise TrainerError(
                    f"network_weights {file_name!r}: {key} has no place in this network: train "
                    "the same parts, LoRA_type, preset and options as that file"
                )
            if value.shape != expected[key]:
                raise TrainerError(
                    f"network_weights {file_name!r}: {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(expected[key])} (set network_dim, conv_dim and factor "
                    "to the file's, or dim_from_weights)"
                )
        self.library.load_state_dict(dict(tensors), strict=False)
        _load_dylora_blocks(self.parts, tensors)
        loaded = self.library.state_dict()
        # Not bit-equal: Native Fine-Tuning loads W + diff and saves (W + diff) - W.
        missed = [k for k, v in tensors.items() if not _close(loaded[k].to(v), v)]
        if missed:  # a module whose loading hook does not read its own saved layout
            raise TrainerError(
                f"network_weights {file_name!r}: lycoris-lora did not load {missed[0]} "
                f"(and {len(missed) - 1} more) into this network"
            )

    def apply_max_norm(self, max_norm: float) -> MaxNormReport:
        """``LycorisNetworkKohya.apply_max_norm_regularization`` (zeros when none scaled)."""
        scaled, mean, largest = self.library.apply_max_norm_regularization(max_norm, None)
        return MaxNormReport(int(scaled), float(mean), float(largest))


@torch.no_grad()
def _load_dylora_blocks(
    parts: dict[str, list[torch.nn.Module]], tensors: dict[str, torch.Tensor]
) -> None:
    """LyCORIS/DyLoRA's file back into its blocks, which the library does not do (4.1.3:
    ``modules/dylora.py: DyLoraModule`` saves ``lora_up`` (out, r) = ``up_list`` side by side
    and ``lora_down`` (r, in, k...) = ``down_list`` stacked, in ``custom_state_dict``; its
    ``load_state_dict`` returns at once and its parameters are ``up_list.<i>`` /
    ``down_list.<i>``, names no file has). Here the same split, block by block."""
    for module in (m for modules in parts.values() for m in modules):
        if not isinstance(module, DyLoraModule):
            continue
        up = tensors.get(f"{module.lora_name}.lora_up.weight")
        down = tensors.get(f"{module.lora_name}.lora_down.weight")
        if up is None or down is None:
            continue
        size = module.block_size
        down = down.reshape(module.lora_dim, -1)
        for i, (up_block, down_block) in enumerate(
            zip(module.up_list, module.down_list, strict=True)
        ):
            up_block.copy_(up[:, i * size : (i + 1) * size])
            down_block.copy_(down[i * size : (i + 1) * size])


def _close(loaded: torch.Tensor, saved: torch.Tensor) -> bool:
    return bool(torch.allclose(loaded.float(), saved.float(), rtol=1e-4, atol=1e-6))


def _roots(
    unet: torch.nn.Module | None, encoders: Sequence[torch.nn.Module] | None
) -> tuple[torch.nn.Module, list[torch.nn.Module] | None]:
    """What sd-scripts hands the library: its SDXL UNet and [TE1, TE2] (an empty module
    stands in for a part not trained, which ``apply_to`` drops anyway)."""
    unet_root = sd_scripts_unet(unet) if unet is not None else torch.nn.Module()
    text_roots = [text_model_root(e) for e in encoders] if encoders is not None else None
    return unet_root, text_roots


def build_lycoris(
    config: TrainingConfig,
    unet: torch.nn.Module | None,
    encoders: Sequence[torch.nn.Module] | None,
    weights: Path | None,
) -> LycorisNetwork:
    """The LyCORIS network of ``config`` on the parts being trained."""
    unet_root, text_roots = _roots(unet, encoders)
    kwargs = net_kwargs(config)
    if config.dim_from_weights:
        if weights is None:
            raise TrainerError("dim_from_weights needs network_weights")
        try:
            library, _ = kohya.create_network_from_weights(
                1.0, str(weights), None, text_roots, unet_root, **kwargs
            )
        except RuntimeError as exc:  # a module's tensors do not fit the layer they name
            raise TrainerError(
                f"dim_from_weights: lycoris-lora cannot rebuild the network of {weights.name}: "
                f"{exc} (a LyCORIS/DyLoRA file with conv modules cannot be read by the library: "
                "use network_weights without dim_from_weights, see docs/kohya-semantics.md)"
            ) from exc
    else:
        library = kohya.create_network(
            1.0, config.network_dim, config.network_alpha, None, text_roots, unet_root,
            warn_on_unmatched=False, neuron_dropout=config.network_dropout, **kwargs,
        )  # fmt: skip
    library.apply_to(text_roots, unet_root, encoders is not None, unet is not None)
    return _wrap(library, config, unet, encoders)


def _wrap(
    library: Any,
    config: TrainingConfig,
    unet: torch.nn.Module | None,
    encoders: Sequence[torch.nn.Module] | None,
) -> LycorisNetwork:
    network = LycorisNetwork(rank=config.network_dim, alpha=config.network_alpha, library=library)
    parts: dict[str, tuple[torch.nn.Module, list[torch.nn.Module]]] = {}
    if unet is not None:
        parts["unet"] = (unet, list(library.unet_loras))
    if encoders is not None:
        parts["textencoder"] = (encoders[0], list(library.text_encoder_loras))
    for part, (root, modules) in parts.items():
        network.parts[part] = modules
        device = next(root.parameters()).device
        for module in modules:
            module.to(device)
        for parameter in network.parameters(part):
            parameter.data = parameter.data.float()  # trainable weights stay fp32
            parameter.requires_grad_(True)
    for part, root in _mode_roots(unet, encoders):
        before_each_forward(root, partial(_set_mode, network.parts[part]))
    return network


def _mode_roots(
    unet: torch.nn.Module | None, encoders: Sequence[torch.nn.Module] | None
) -> list[tuple[str, torch.nn.Module]]:
    roots = [("unet", unet)] if unet is not None else []
    return roots + [("textencoder", e) for e in encoders or ()]


def _set_mode(modules: list[torch.nn.Module], training: bool) -> None:
    # The modules hang off the library's container, not the model: they take the mode
    # of the model whose layers they wrap (dropouts off while sampling).
    if modules and modules[0].training != training:
        for module in modules:
            module.train(training)
