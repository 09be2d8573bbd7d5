"""Per-block ranks and learning rates on SDXL, read as sd-scripts reads them.

Source: sd-scripts ``networks/lora.py`` at the GUI's commit (``b8896aad``):
``parse_block_lr_kwargs``, ``get_block_lr_weight``, ``get_block_dims_and_alphas``,
``remove_block_dims_and_alphas`` and ``get_block_index``. Torch-free, so the payload
edge validates the strings with the same code the trainer uses.

SDXL has 23 blocks as sd-scripts counts them (``LoRANetwork.SDXL_NUM_OF_BLOCKS``):
0 the time / label embeddings (never a LoRA), 1-9 ``input_blocks`` 0-8, 10-12
``middle_block`` 0-2, 13-21 ``output_blocks`` 0-8, 22 the ``out`` layers (never a
LoRA). ``down_lr_weight`` / ``up_lr_weight`` give 9 multipliers (or a preset),
``mid_lr_weight`` 3; the two embedding ends keep 1.0.

Where lorabox reads a value more strictly than sd-scripts (docs/kohya-semantics.md,
"Network types"): a ``*_lr_weight`` that is neither a list nor a known preset
(e.g. a single ``0.5``) is a problem, where sd-scripts logs an error and trains as
if it were unset; whitespace around values is ignored, where the GUI's split on
spaces would break the value apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from trainer.lora.gui_args import LOCON

if TYPE_CHECKING:
    from trainer.config.typed import TrainingConfig

BLOCKS = 23  # 1 + 9 + 3 + 9 + 1
DOWN_OR_UP = 9  # LoRANetwork.SDXL_NUM_OF_BLOCKS
MID = 3  # LoRANetwork.SDXL_NUM_OF_MID_BLOCKS
PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")
LR_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight")
DIM_KEYS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
BLOCK_KEYS = (*LR_KEYS, "block_lr_zero_threshold", *DIM_KEYS)

Found = list[tuple[str, str]]  # (kohya key, message)
T = TypeVar("T")


@dataclass(frozen=True)
class BlockPlan:
    """What the per-block keys resolve to: 23 values each, or None where unused.

    ``dims`` is None when per-block ranks are off (no ``block_dims`` and no LR
    weights): then every module takes ``network_dim``. ``conv_dims`` is None when
    the 3×3 convolutions get no per-block rank.
    """

    lr_weights: tuple[float, ...] | None
    dims: tuple[int, ...] | None
    alphas: tuple[float, ...] | None
    conv_dims: tuple[int, ...] | None
    conv_alphas: tuple[float, ...] | None

    def unet_rank(self, block: int, three_by_three: bool) -> tuple[int, float] | None:
        """(rank, alpha) of a UNet module in ``block``; None: no module (rank 0 or no
        3×3 rank). An alpha of 0 means alpha = rank, as ``LoRAModule`` reads it."""
        dims, alphas = (
            (self.conv_dims, self.conv_alphas) if three_by_three else (self.dims, self.alphas)
        )
        if dims is None or alphas is None or not dims[block]:
            return None
        return dims[block], alphas[block] or float(dims[block])

    @property
    def targets_conv_blocks(self) -> bool:
        """sd-scripts adds the resnet / sampler layers when a 3×3 rank exists."""
        return self.conv_dims is not None


def block_index(kohya_name: str) -> int:
    """The block of a UNet module, by its ldm Kohya name (``get_block_index``, SDXL
    branch); -1 for names outside the UNet."""
    if not kohya_name.startswith("lora_unet_"):
        return -1
    name = kohya_name[len("lora_unet_") :]
    first = {"input_blocks_": 1, "middle_block_": 10, "output_blocks_": 13}
    for prefix, start in first.items():
        if name.startswith(prefix):
            return start + int(name.split("_")[2])
    if name.startswith(("time_embed_", "label_emb_")):
        return 0
    return 22 if name.startswith("out_") else -1


def preset_weights(text: str) -> list[float]:
    """A ``*_lr_weight`` preset with optional ``+base`` (``get_block_lr_weight.get_list``)."""
    tokens = text.split("+")
    name = tokens[0].strip()
    base = float(tokens[1]) if len(tokens) > 1 else 0.0
    last = DOWN_OR_UP - 1
    curves = {
        "cosine": [math.sin(math.pi * (i / last) / 2) for i in reversed(range(DOWN_OR_UP))],
        "sine": [math.sin(math.pi * (i / last) / 2) for i in range(DOWN_OR_UP)],
        "linear": [i / last for i in range(DOWN_OR_UP)],
        "reverse_linear": [i / last for i in reversed(range(DOWN_OR_UP))],
        "zeros": [0.0] * DOWN_OR_UP,
    }
    if name not in curves:
        raise ValueError(
            f"{text!r} is neither comma-separated values nor a preset "
            f"({', '.join(PRESETS)}, optionally +base); sd-scripts would ignore it"
        )
    return [w + base for w in curves[name]]


def _floats(text: str) -> list[float]:
    # An empty item is 0.0, as parse_block_lr_kwargs reads it.
    return [float(item) if item.strip() else 0.0 for item in text.split(",")]


def _fit(key: str, values: list[float], size: int, notes: Found) -> list[float]:
    """Truncate or pad with 1.0 to ``size``, as ``get_block_lr_weight`` does (with a note)."""
    if len(values) > size:
        notes.append((key, f"has {len(values)} values; sd-scripts keeps the first {size}"))
        return values[:size]
    if len(values) < size:
        notes.append((key, f"has {len(values)} values; sd-scripts fills the rest with 1.0"))
        return values + [1.0] * (size - len(values))
    return values


def lr_weights(settings: Mapping[str, str], notes: Found) -> list[float] | None:
    """The 23 LR multipliers, or None when no ``*_lr_weight`` is set."""
    if not any(settings[key].strip() for key in LR_KEYS):
        return None
    threshold = _read("block_lr_zero_threshold", settings["block_lr_zero_threshold"], _threshold)
    down, mid, up = (
        _part(key, settings[key].strip(), size, threshold, notes)
        for key, size in zip(LR_KEYS, (DOWN_OR_UP, MID, DOWN_OR_UP), strict=True)
    )
    return [1.0, *down, *mid, *up, 1.0]


def _threshold(text: str) -> float:
    return float(text) if text.strip() else 0.0


def _part(key: str, text: str, size: int, threshold: float, notes: Found) -> list[float]:
    if not text:
        return [1.0] * size  # an unset part is all 1.0, never thresholded
    # mid is always read as a list: sd-scripts' float() fails on a preset name there.
    parse = _floats if key == "mid_lr_weight" or "," in text else preset_weights
    values = _fit(key, _read(key, text, parse), size, notes)
    return [w if w > threshold else 0.0 for w in values]


def _ints(text: str) -> list[int]:
    values = [int(item) for item in text.split(",")]
    if len(values) != BLOCKS:
        raise ValueError(f"needs {BLOCKS} values on SDXL, got {len(values)}")
    return values


def _alphas(text: str) -> list[float]:
    values = [float(item) for item in text.split(",")]
    if len(values) != BLOCKS:
        raise ValueError(f"needs {BLOCKS} values on SDXL, got {len(values)}")
    return values


@dataclass(frozen=True)
class NetworkRank:
    """``network_dim``/``network_alpha`` and the Kohya LoCon 3×3 rank (None: no conv_dim)."""

    dim: int
    alpha: float
    conv_dim: int | None = None
    conv_alpha: float | None = None


def config_settings(config: TrainingConfig) -> dict[str, str]:
    return {key: getattr(config, key) for key in BLOCK_KEYS}


def config_rank(config: TrainingConfig) -> NetworkRank:
    """The ranks sd-scripts' ``create_network`` reads: ``conv_dim`` only for Kohya LoCon, the
    one per-block type the GUI passes it for (``kohya_gui/lora_gui.py: train_model``)."""
    locon = config.lora_type == LOCON
    return NetworkRank(
        config.network_dim,
        config.network_alpha,
        config.conv_dim if locon else None,
        config.conv_alpha if locon else None,
    )


def plan_blocks(settings: Mapping[str, str], rank: NetworkRank) -> tuple[BlockPlan | None, Found]:
    """The per-block plan sd-scripts' ``create_network`` builds, and notes for the user.

    Raises ValueError naming the key when a value cannot be read (sd-scripts would
    stop with an assertion or a parse error)."""
    notes: Found = []
    weights = lr_weights(settings, notes)
    dims_text = settings["block_dims"].strip()
    if not dims_text and weights is None:
        ignored = [key for key in DIM_KEYS if settings[key].strip()]
        notes += [(key, "ignored: sd-scripts reads it only with block_dims or a *_lr_weight")
                  for key in ignored]  # fmt: skip
        return None, notes
    dims = _read("block_dims", dims_text, _ints) if dims_text else [rank.dim] * BLOCKS
    alphas_text = settings["block_alphas"].strip()
    alphas = _read("block_alphas", alphas_text, _alphas) if alphas_text else [rank.alpha] * BLOCKS
    conv_dims, conv_alphas = _conv_blocks(settings, rank, notes)
    if weights is not None:  # remove_block_dims_and_alphas: no LR, no module
        for i, weight in enumerate(weights):
            if weight == 0:
                dims[i] = 0
                if conv_dims is not None:
                    conv_dims[i] = 0
    plan = BlockPlan(
        tuple(weights) if weights is not None else None,
        tuple(dims),
        tuple(alphas),
        tuple(conv_dims) if conv_dims is not None else None,
        tuple(conv_alphas) if conv_alphas is not None else None,
    )
    return plan, notes


def _conv_blocks(
    settings: Mapping[str, str], rank: NetworkRank, notes: Found
) -> tuple[list[int] | None, list[float] | None]:
    text = settings["conv_block_dims"].strip()
    alphas_text = settings["conv_block_alphas"].strip()
    if text:
        dims = _read("conv_block_dims", text, _ints)
        if alphas_text:
            return dims, _read("conv_block_alphas", alphas_text, _alphas)
        conv_alpha = rank.conv_alpha if rank.conv_alpha is not None else 1.0
        return dims, [conv_alpha] * BLOCKS
    if alphas_text:
        notes.append(
            ("conv_block_alphas", "ignored: sd-scripts reads it only with conv_block_dims")
        )
    if rank.conv_dim is not None:
        return [rank.conv_dim] * BLOCKS, [rank.conv_alpha or 0.0] * BLOCKS
    return None, None


class BlockValueError(ValueError):
    """A per-block value sd-scripts cannot read; ``key`` is the Kohya key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _read(key: str, text: str, parse: Callable[[str], T]) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise BlockValueError(key, str(exc)) from exc
