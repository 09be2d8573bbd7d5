"""The network of a config, for every ``LoRA_type`` of the kohya_ss GUI.

sd-scripts' ``train_network.py: NetworkTrainer.train`` imports the type's
``network_module`` (``trainer.lora.gui_args``) and calls its ``create_network``
(``create_network_from_weights`` with ``dim_from_weights``), ``apply_to`` on the parts
being trained, then ``load_weights(network_weights)``. Here:

* Standard, Kohya LoCon, LoRA-FA: peft LoRA (``trainer.lora.network``), per-block
  ranks from ``trainer.lora.blocks``;
* Kohya DyLoRA: ``trainer.lora.dylora``;
* the LyCORIS types: lycoris-lora itself (``trainer.lora.lycoris``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trainer.errors import TrainerError
from trainer.lora.blocks import config_rank, config_settings, lr_weights, plan_blocks
from trainer.lora.dylora import Target, attach_dylora
from trainer.lora.gui_args import DYLORA, LOCON, LORA_FA, is_lycoris
from trainer.lora.kohya_file import load_lora_into, read_tensors
from trainer.lora.lycoris import build_lycoris
from trainer.lora.network import LoraNetwork, inject_lora, make_lora_fa
from trainer.lora.regularizers import Dropouts, install_dropouts
from trainer.lora.targets import (
    ConvRank,
    Layer,
    Targets,
    block_unet_ranks,
    explicit_targets,
    kohya_unet_name,
    text_candidates,
    unet_candidates,
    unet_targets,
)
from trainer.models.ldm_names import text_model_path

if TYPE_CHECKING:
    from trainer.config.typed import TrainingConfig

Ranks = dict[str, tuple[int, float]]  # kohya module name -> (rank, alpha)


def build_network(
    config: TrainingConfig,
    unet: torch.nn.Module | None,
    encoders: tuple[torch.nn.Module, torch.nn.Module] | None,
    weights: Path | None = None,
) -> LoraNetwork:
    """The network on the parts being trained (None: not trained), with ``network_weights``
    loaded; dropouts installed where the type has them."""
    kind = config.lora_type
    network: LoraNetwork
    if is_lycoris(kind):
        network = build_lycoris(config, unet, encoders, weights)
    elif kind == DYLORA:
        network = _dylora(config, unet, encoders, weights)
    else:
        network = _kohya(config, unet, encoders, weights)
    if weights is not None:
        load_lora_into(network, weights)
    if not is_lycoris(kind) and kind != DYLORA and not config.dim_from_weights:
        dropouts = Dropouts(config.network_dropout, config.rank_dropout, config.module_dropout)
        install_dropouts(network, dropouts)
    return network


def file_ranks(weights: Path | None) -> Ranks:
    """Each module's rank (``lora_down`` rows) and alpha (its rank when the file has none),
    as ``networks/lora.py: create_network_from_weights`` reads them."""
    if weights is None:
        raise TrainerError("dim_from_weights needs network_weights")
    tensors = read_tensors(weights)
    ranks: Ranks = {}
    for key, value in tensors.items():
        name = key.split(".")[0]
        if key.endswith("lora_down.weight"):
            alpha = tensors.get(f"{name}.alpha")
            ranks[name] = (value.shape[0], float(alpha) if alpha is not None else value.shape[0])
    return ranks


def _named(
    candidates: dict[str, Layer], name_of: dict[str, str], ranks: Ranks
) -> dict[str, tuple[int, float]]:
    """Candidate path -> (rank, alpha) for the modules ``ranks`` names."""
    return {path: ranks[name_of[path]] for path in candidates if name_of[path] in ranks}


def _text_names(index: int, encoder: torch.nn.Module) -> dict[str, str]:
    return {
        path: f"lora_te{index}_" + text_model_path(path).replace(".", "_")
        for path in text_candidates(encoder)
    }


def _kohya(
    config: TrainingConfig,
    unet: torch.nn.Module | None,
    encoders: tuple[torch.nn.Module, torch.nn.Module] | None,
    weights: Path | None,
) -> LoraNetwork:
    settings = config_settings(config)
    unet_plan: Targets | None = None
    text_plan: tuple[Targets, Targets] | None = None
    block_lr = None
    if config.dim_from_weights:
        ranks = file_ranks(weights)
        if unet is not None:
            layers = unet_candidates(unet, conv_blocks=True)
            names = {path: kohya_unet_name(path) for path in layers}
            unet_plan = explicit_targets(_named(layers, names, ranks))
        if encoders is not None:
            text_plan = tuple(  # type: ignore[assignment]
                explicit_targets(_named(text_candidates(e), _text_names(i, e), ranks))
                for i, e in enumerate(encoders, start=1)
            )
        block_lr = lr_weights(settings, []) if config.lora_type != LORA_FA else None
    elif unet is not None:
        unet_plan, block_lr = _kohya_unet_plan(config, unet, settings)
    network = inject_lora(
        unet, encoders, config.network_dim, config.network_alpha, unet_plan, text_plan
    )
    network.block_lr_weights = tuple(block_lr) if block_lr is not None else None
    if config.lora_type == LORA_FA:
        make_lora_fa(network)
    return network


def _kohya_unet_plan(
    config: TrainingConfig, unet: torch.nn.Module, settings: dict[str, str]
) -> tuple[Targets, list[float] | None]:
    """The UNet targets of Standard / Kohya LoCon / LoRA-FA, per block when asked."""
    conv = ConvRank(config.conv_dim, config.conv_alpha) if config.lora_type == LOCON else None
    if config.lora_type == LORA_FA:  # refused with block keys (config rules)
        return unet_targets(unet, None), None
    rank = config_rank(config)
    plan, _notes = plan_blocks(settings, rank)
    if plan is None:
        return unet_targets(unet, conv), None
    weights = list(plan.lr_weights) if plan.lr_weights is not None else None
    return explicit_targets(block_unet_ranks(unet, plan)), weights


def _dylora(
    config: TrainingConfig,
    unet: torch.nn.Module | None,
    encoders: tuple[torch.nn.Module, torch.nn.Module] | None,
    weights: Path | None,
) -> LoraNetwork:
    """``networks/dylora.py: DyLoRANetwork``: every module at network_dim / network_alpha
    (3×3 convs too once conv_dim is set, which must equal network_dim); from a file, each
    at the file's rank with unit 1 (``create_network_from_weights``)."""
    from_file = file_ranks(weights) if config.dim_from_weights else None
    unit = 1 if from_file is not None else config.unit
    groups: list[tuple[str, torch.nn.Module, list[Target]]] = []
    if unet is not None:
        layers = unet_candidates(unet, conv_blocks=from_file is not None or bool(config.conv_dim))
        names = {path: kohya_unet_name(path) for path in layers}
        groups.append(("unet", unet, _dylora_layers(layers, names, config, from_file)))
    for index, encoder in enumerate(encoders or (), start=1):
        layers = text_candidates(encoder)
        layer_list = _dylora_layers(layers, _text_names(index, encoder), config, from_file)
        groups.append(("textencoder", encoder, layer_list))
    return attach_dylora(groups, config.network_dim, config.network_alpha, unit)


def _dylora_layers(
    layers: dict[str, Layer],
    names: dict[str, str],
    config: TrainingConfig,
    from_file: Ranks | None,
) -> list[Target]:
    if from_file is None:
        return [(names[p], m, config.network_dim, config.network_alpha) for p, m in layers.items()]
    return [(names[p], m, *from_file[names[p]]) for p, m in layers.items() if names[p] in from_file]


def network_parts(
    unet: torch.nn.Module, encoders: Sequence[torch.nn.Module], config: TrainingConfig
) -> tuple[torch.nn.Module | None, tuple[torch.nn.Module, torch.nn.Module] | None]:
    """The parts ``config`` trains (None: that part gets no module and no file key)."""
    trained = (encoders[0], encoders[1]) if config.train_text_encoder else None
    return (unet if config.train_unet else None), trained
