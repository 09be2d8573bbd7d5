"""The optimizer's parameter groups, as the network modules' ``prepare_optimizer_params``.

sd-scripts (``networks/lora.py: LoRANetwork.prepare_optimizer_params``; the DyLoRA,
LoRA-FA and LyCORIS networks do the same without blocks): one group for the text
encoders at ``text_encoder_lr`` ("textencoder"), then the UNet at ``unet_lr`` ("unet"),
or, with per-block LR weights, one group per block in the order its first module
appears, at ``unet_lr × weight`` ("unet_block<i>"); a group whose rate is 0 is left
out ("NO LR skipping!"), so its weights never move. Only trainable weights are listed
(LoRA-FA's frozen ``lora_down`` is not: ``get_trainable_params``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.config.typed import TrainingConfig
    from trainer.lora.network import LoraNetwork


def parameter_groups(
    config: TrainingConfig, network: LoraNetwork
) -> tuple[list[dict[str, Any]], list[str]]:
    """The optimizer groups and their names (the ``lr/<name>`` series)."""
    groups: list[dict[str, Any]] = []
    names: list[str] = []
    if config.train_text_encoder:
        groups.append({"params": _trainable(network, "textencoder"), "lr": config.text_encoder_lr})
        names.append("textencoder")
    if config.train_unet:
        # Only the Kohya LoRA network has per-block LR weights (duck-typed networks have none).
        weights = getattr(network, "block_lr_weights", None)
        if weights is None:
            groups.append({"params": _trainable(network, "unet"), "lr": config.unet_lr})
            names.append("unet")
        else:
            for block, params in network.unet_blocks().items():
                rate = config.unet_lr * weights[block]
                if rate and params:
                    groups.append({"params": params, "lr": rate})
                    names.append(f"unet_block{block}")
    return groups, names


def _trainable(network: LoraNetwork, part: str) -> list[Any]:
    return [p for p in network.parameters(part) if p.requires_grad]
