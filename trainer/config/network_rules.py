"""Rules of the network types: what sd-scripts and lycoris-lora assert, and what they ignore.

Problems are the combinations the upstream code stops on (an assertion, a value it
cannot read) or that lorabox cannot train yet; warnings name settings a GUI run
silently ignores for the chosen ``LoRA_type`` (the payload keeps them, the run does
not use them). Sources are cited per rule; docs/kohya-semantics.md, "Network types",
summarises them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainer.config.errors import ConfigWarning
from trainer.lora.blocks import (
    BLOCK_KEYS,
    DIM_KEYS,
    BlockValueError,
    NetworkRank,
    config_rank,
    config_settings,
    plan_blocks,
)
from trainer.lora.gui_args import DYLORA, LOCON, LORA_FA, LYCORIS_ALGOS, STANDARD, is_lycoris

if TYPE_CHECKING:
    from trainer.config.typed import TrainingConfig

Found = list[tuple[str, str]]


def network_problems(config: TrainingConfig) -> Found:
    """Combinations that cannot be trained, each under the key to change."""
    kind = config.lora_type
    found: Found = []
    if kind in (STANDARD, LOCON):
        try:
            plan_blocks(config_settings(config), config_rank(config))
        except BlockValueError as exc:
            found.append((exc.key, exc.message))
    if kind == LORA_FA:
        found += [
            (key, "LoRA-FA has no SDXL block indexing in sd-scripts (networks/lora_fa.py: "
                  "get_block_index returns -1 for every SDXL module); use Standard")
            for key in BLOCK_KEYS if getattr(config, key).strip()
        ]  # fmt: skip
    found += _unit_problems(config)
    if config.dim_from_weights and not config.network_weights:
        found.append(("dim_from_weights", "needs network_weights: the ranks come from that file"))
    found += _boft_problems(config)
    if kind == "LyCORIS/Native Fine-Tuning" and config.fp8_base:
        found.append(("fp8_base", "Native Fine-Tuning trains the base weights themselves: they "
                                  "cannot be stored in fp8"))  # fmt: skip
    return found


def _unit_problems(config: TrainingConfig) -> Found:
    kind, dim, unit = config.lora_type, config.network_dim, config.unit
    found: Found = []
    if kind == DYLORA and not config.dim_from_weights:
        # networks/dylora.py: DyLoRAModule asserts "rank must be a multiple of unit";
        # create_network asserts "conv_dim must be same as network_dim".
        if dim % unit:
            found.append(("unit", f"network_dim ({dim}) must be a multiple of unit ({unit})"))
        if config.conv_dim and config.conv_dim != dim:
            found.append(("conv_dim", f"Kohya DyLoRA needs conv_dim 0 or network_dim ({dim}), "
                                      "as sd-scripts asserts"))  # fmt: skip
    if kind == "LyCORIS/DyLoRA" and not config.dim_from_weights:
        # lycoris modules/dylora.py: "lora_dim must be a multiple of block_size".
        for key, rank in (("network_dim", dim), ("conv_dim", config.conv_dim)):
            if rank and rank % unit:
                found.append((key, f"must be a multiple of unit ({unit}), LyCORIS' block_size"))
    return found


# SDXL's layer widths are 5 × 2^k (UNet) or 3 × 2^k (text encoders): lycoris' butterfly
# factorization (modules/boft.py: butterfly_factor) needs an even block <= the rank that
# leaves a power of two, i.e. a rank of at least 10 (checked with the library on every width).
_BOFT_MIN_RANK = 10
_CONV_PRESETS = ("full", "unet-convblock-only")


def _boft_problems(config: TrainingConfig) -> Found:
    if config.lora_type != "LyCORIS/BOFT" or config.dim_from_weights:
        return []
    ranks = [("network_dim", config.network_dim)]
    if config.conv_dim and config.lycoris_preset in _CONV_PRESETS:
        ranks.append(("conv_dim", config.conv_dim))
    return [
        (key, f"LyCORIS/BOFT on SDXL needs at least {_BOFT_MIN_RANK} (lycoris cannot split "
              "SDXL's layer widths into butterfly blocks of a smaller size)")
        for key, rank in ranks if rank < _BOFT_MIN_RANK
    ]  # fmt: skip


def network_warnings(values: Mapping[str, Any]) -> list[ConfigWarning]:
    """Settings a GUI run ignores for this ``LoRA_type`` (kohya_gui/lora_gui.py:
    train_model passes them or not; the network module reads them or not)."""
    kind = values["LoRA_type"]
    ignored: dict[str, str] = {}
    if is_lycoris(kind) or kind == DYLORA:
        why = "kohya_ss does not pass it to lycoris" if is_lycoris(kind) else (
            "sd-scripts networks/dylora.py does not read it")  # fmt: skip
        ignored.update({key: why for key in BLOCK_KEYS if str(values[key]).strip()})
    if kind == DYLORA:
        for key in ("network_dropout", "rank_dropout", "module_dropout"):
            if values[key]:
                ignored[key] = "DyLoRAModule has no dropout (sd-scripts networks/dylora.py)"
        if values["scale_weight_norms"]:
            ignored["scale_weight_norms"] = (
                "DyLoRANetwork has no max-norm regularization; sd-scripts turns it off"
            )
    if LYCORIS_ALGOS.get(kind) == "ia3":
        for key in ("rank_dropout", "module_dropout"):
            if values[key]:
                ignored[key] = "kohya_ss does not pass it for iA3"
    if values["dim_from_weights"]:
        # create_network_from_weights builds the modules from the file alone: no dropout,
        # no block ranks (the LR weights still apply, networks/lora.py: parse_block_lr_kwargs).
        for key in ("network_dropout", "rank_dropout", "module_dropout", *DIM_KEYS):
            if values[key] and str(values[key]).strip():
                ignored.setdefault(key, "the network comes from network_weights (dim_from_weights)")
    found = [ConfigWarning(key, f"ignored: {why}") for key, why in ignored.items()]
    if kind in (STANDARD, LOCON):
        found += [ConfigWarning(key, note) for key, note in _block_notes(values)]
    return found


def _block_notes(values: Mapping[str, Any]) -> Found:
    """Lists sd-scripts pads, truncates or never reads (``get_block_lr_weight``,
    ``create_network``); a value it cannot read is a problem (``network_problems``)."""
    settings = {key: str(values[key]) for key in BLOCK_KEYS}
    try:
        return plan_blocks(settings, NetworkRank(values["network_dim"], 1.0))[1]
    except BlockValueError:
        return []


def network_fields(values: Mapping[str, Any], fields: dict[str, Any]) -> None:
    """Settings sd-scripts switches off before training (so the run reads them off too)."""
    if values["LoRA_type"] == DYLORA:
        # train_network.py: "scale_weight_norms is specified but the network does not
        # support it" -> args.scale_weight_norms = False.
        fields["scale_weight_norms"] = None
