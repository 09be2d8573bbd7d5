"""The tensors each network type of the kohya_ss GUI adds, without torch: their shapes, and
whether they train.

What ``trainer.lora.build.build_network`` makes, layer by layer, on the layers of
:mod:`trainer.estimate.architecture` (a test builds every type on the meta-device miniature
and on full SDXL where the library allows it, and compares):

- Standard, Kohya LoCon, LoRA-FA (peft, ``trainer/lora/network.py``): a down ``rank × fan_in
  × k²`` and an up ``out × rank``; LoRA-FA's down is frozen (``make_lora_fa``: it stays on
  the device in fp32 but has no gradient and no optimizer state).
- Kohya DyLoRA (``trainer/lora/dylora.py``, sd-scripts ``networks/dylora.py``): the same
  sizes as one tensor per rank row (``lora_A`` / ``lora_B`` lists), on the LoCon layers too
  once ``conv_dim`` is set. Many small tensors matter to bitsandbytes, which keeps a tensor
  under ``min_8bit_size`` values in fp32.
- LyCORIS (``lycoris/modules/*.py`` of lycoris-lora, through ``lycoris.kohya``): the
  preset's layers (``full``: Kohya LoCon's, its 3×3 convs at ``conv_dim``, none when it
  is 0, as ``lycoris.kohya.create_network`` reads the GUI's text), and per
  layer the algorithm's own tensors (``LoConModule``, ``LohaModule``, ``LokrModule``,
  ``IA3Module``, ``DyLoraModule``, ``GLoRAModule``, ``ButterflyOFTModule``,
  ``DiagOFTModule``, ``FullModule``), with ``use_scalar`` and ``rescaled`` where they add one.

Not counted: ``dora_wd``'s magnitude vector and ``train_norm``'s norm layers (one value per
channel: under 0.1% of a rank-8 network), per-block ranks (``block_dims``: counted at the
largest rank the config gives, an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.config import TrainingConfig
from trainer.estimate.architecture import Architecture, Layer, lora_kinds
from trainer.lora.gui_args import DYLORA, LOCON, LORA_FA, LYCORIS_ALGOS

# lycoris-lora's presets (lycoris/config.py: PRESET) as the layer kinds of
# trainer.estimate.architecture they select, and whether the encoders get modules.
PRESET_KINDS = {
    "full": ({"standard", "locon", "locon_conv"}, True),
    "full-lin": ({"standard", "locon"}, True),
    "attn-mlp": ({"standard"}, True),
    "attn-only": ({"standard"}, True),  # then only the attention projections
    "unet-transformer-only": ({"standard"}, False),
    "unet-convblock-only": ({"locon", "locon_conv"}, False),
}
ATTENTION = (".to_q", ".to_k", ".to_v", ".to_out.0")
TEXT_ATTENTION = ("q", "k", "v", "out")
# Memory-heavy types (docs/parameters.md): Native Fine-Tuning trains a full copy of every
# targeted weight; LoHa and GLoRA hold about twice LoRA's tensors at the same rank.
MEMORY_HEAVY = ("LyCORIS/Native Fine-Tuning", "LyCORIS/LoHa", "LyCORIS/GLoRA")


@dataclass(frozen=True)
class Tensor:
    """One tensor the network adds to a layer."""

    part: str  # "unet" or "textencoder"
    layer: str  # the layer's name (a UNet layer's is the diffusers path)
    shape: tuple[int, ...]
    trainable: bool = True
    zero: bool = False  # starts at zero (peft's up weights do: Prodigy keeps one p0 value)
    count: int = 1  # tensors of this shape (DyLoRA's rank rows)

    @property
    def numel(self) -> int:
        """Values in all ``count`` tensors."""
        return math.prod(self.shape) * self.count


def network_tensors(config: TrainingConfig, arch: Architecture) -> list[Tensor]:
    """Every tensor ``build_network`` adds for ``config`` on ``arch``, in its order."""
    kind = config.lora_type
    algo = LYCORIS_ALGOS.get(kind)
    layers = _target_layers(config, arch, algo)
    found: list[Tensor] = []
    for part, layer in layers:
        rank = _rank(config, layer, algo)
        if algo is not None:
            shapes = _counted(lycoris_shapes(algo, layer, rank, config))
        elif kind == DYLORA:
            down, up = layer.lora_shapes  # one row of each per rank
            shapes = [(down, rank), (up, rank)]
        else:
            shapes = [(shape, 1) for shape in _lora_pair(layer, rank)]
        for index, (shape, count) in enumerate(shapes):
            frozen_down = kind == LORA_FA and index == 0
            is_up = algo is None and index % 2 == 1 and kind != DYLORA
            zero = is_up and config.network_weights is None
            found.append(Tensor(part, layer.name, shape, not frozen_down, zero, count))
    return found


def lora_kinds_of(config: TrainingConfig) -> frozenset[str]:
    """The ``Layer.lora`` kinds the network touches (which layers' paths autograd records,
    and where the walk puts its rank-sized activations)."""
    algo = LYCORIS_ALGOS.get(config.lora_type)
    if algo is None:
        conv = config.conv_dim if config.lora_type in (LOCON, DYLORA) else 0
        return lora_kinds(LOCON if conv else config.lora_type, conv)
    kinds, _ = PRESET_KINDS[config.lycoris_preset]
    return frozenset(kinds if config.conv_dim else kinds - {"locon_conv"})


def _max_rank(text: str, default: int) -> int:
    values = [int(float(v)) for v in text.split(",") if v.strip()] if text else []
    return max(values, default=default)


def _rank(config: TrainingConfig, layer: Layer, algo: str | None) -> int:
    if algo is not None:  # lycoris.kohya.create_network: 3×3 convs at conv_dim
        return config.conv_dim if layer.kernel > 1 else config.network_dim
    if layer.lora == "locon_conv" and config.lora_type == LOCON:
        return _max_rank(config.conv_block_dims, config.conv_dim)
    return _max_rank(config.block_dims, config.network_dim)


def _target_layers(
    config: TrainingConfig, arch: Architecture, algo: str | None
) -> list[tuple[str, Layer]]:
    unet, text = config.train_unet, config.train_text_encoder
    if algo is None:
        conv = config.conv_dim if config.lora_type in (LOCON, DYLORA) else 0
        kind = LOCON if conv and config.lora_type == DYLORA else config.lora_type
        return arch.lora_layers(kind, conv, unet=unet, text=text)
    kinds, encoders = PRESET_KINDS[config.lycoris_preset]
    if not config.conv_dim:  # the GUI passes "0", which create_network keeps: no 3×3 convs
        kinds = kinds - {"locon_conv"}
    everything = arch.lora_layers(LOCON, 1, unet=unet, text=text and encoders)
    chosen = [(part, layer) for part, layer in everything if layer.lora in kinds]
    if config.lycoris_preset == "attn-only":
        chosen = [
            (part, layer)
            for part, layer in chosen
            if layer.name.endswith(ATTENTION) or layer.name in TEXT_ATTENTION
        ]
    return chosen


def _lora_pair(layer: Layer, rank: int) -> list[tuple[int, ...]]:
    down, up = layer.lora_shapes
    return [(rank, *down[1:]), (up[0], rank, *up[2:])]


def _counted(shapes: list[tuple[int, ...]]) -> list[tuple[tuple[int, ...], int]]:
    """Runs of one shape as (shape, count), in order."""
    runs: list[tuple[tuple[int, ...], int]] = []
    for shape in shapes:
        if runs and runs[-1][0] == shape:
            runs[-1] = (shape, runs[-1][1] + 1)
        else:
            runs.append((shape, 1))
    return runs


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """``lycoris/functional/general.py: factorization``: ``dimension = m × n``, ``m <= n``,
    ``m`` the given factor when it divides, else the divisor pair nearest the square root
    with ``m`` at most ``factor``."""
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (n, m) if m > n else (m, n)
    limit = dimension if factor < 0 else factor
    m, n = 1, dimension
    while m < n:
        candidate = m + 1
        while dimension % candidate:
            candidate += 1
        other = dimension // candidate
        if candidate + other > m + n or candidate > limit:
            break
        m, n = candidate, other
    return (n, m) if m > n else (m, n)


def butterfly(dimension: int, factor: int) -> tuple[int, int]:
    """``lycoris/modules/boft.py: butterfly_factor`` (``power2factorization``): block size
    ``b`` and block count ``n`` (a power of two), ``b`` even and at most ``factor``."""
    limit = dimension if factor == -1 else factor
    m = n = 0
    while m <= limit:
        m += 2
        while dimension % m and m < dimension:
            m += 2
        if m > limit:
            break
        if (dimension // m).bit_count() == 1:
            n = dimension // m
    if n == 0:
        raise ValueError(f"BOFT can't split {dimension} with factor {factor}")
    return dimension // n, n


def lycoris_shapes(algo: str, layer: Layer, rank: int, config: TrainingConfig) -> list[tuple]:
    """The tensors lycoris-lora's module for ``algo`` holds for ``layer`` at ``rank``."""
    o, i, k = layer.out, layer.fan_in, layer.kernel
    kk = k * k
    tucker = config.use_tucker and k > 1
    scalar = [()] if config.use_scalar and algo in ("locon", "loha", "lokr") else []
    rescale = [(o,)] if config.rescaled and algo in ("boft", "diag-oft") else []
    if algo == "locon":
        if tucker:
            return [(rank, i), (rank, rank, k, k), (o, rank), *scalar]
        return [(rank, i * kk), (o, rank), *scalar]
    if algo == "dylora":  # up_list and down_list: one block of `unit` ranks each
        size = config.unit
        return [(o, size)] * (rank // size) + [(size, i * kk)] * (rank // size)
    if algo == "loha":
        pair = [(rank, rank, k, k), (rank, o), (rank, i)] if tucker else [(o, rank), (rank, i * kk)]
        return [*pair, *pair, *scalar]
    if algo == "lokr":
        return [*_lokr(layer, rank, config), *scalar]
    if algo == "ia3":
        # lycoris.kohya.create_network never reads train_on_input: IA3Module's default
        # (False) scales the output channels.
        return [(o,)]
    if algo == "glora":
        return [(rank, i), (i, rank), (rank, i * kk), (o, rank), *scalar]
    if algo == "boft":
        block, count = butterfly(o, rank)
        return [(bin(count - 1).count("1") + 1, count, block, block), *rescale]
    if algo == "diag-oft":
        block, count = factorization(o, rank)
        return [(count, block, block), *rescale]
    if algo == "full":
        return [(o, i * kk), (o,)] if layer.bias else [(o, i * kk)]
    raise ValueError(f"the memory model doesn't know the LyCORIS algorithm {algo!r}")


def _lokr(layer: Layer, rank: int, config: TrainingConfig) -> list[tuple[int, ...]]:
    """``LokrModule``: ``w1`` (out_l × in_m, low-rank under half its larger side) ⊗ ``w2``
    (out_k × in_n × k², low-rank when the rank is under half its larger side)."""
    out_l, out_k = factorization(layer.out, config.factor)
    in_m, in_n = factorization(layer.fan_in, config.factor)
    kk = layer.kernel**2
    # The GUI always passes decompose_both, as text, which lycoris.kohya doesn't convert:
    # "False" is true there too (docs/parameters.md, decompose_both).
    if rank < max(out_l, in_m) / 2:
        w1: list[tuple[int, ...]] = [(out_l, rank), (rank, in_m)]
    else:
        w1 = [(out_l, in_m)]
    if rank >= max(out_k, in_n) / 2:
        return [*w1, (out_k, in_n * kk)]
    if config.use_tucker and layer.kernel > 1:
        return [*w1, (rank, rank, layer.kernel, layer.kernel), (rank, out_k), (rank, in_n)]
    return [*w1, (out_k, rank), (rank, in_n * kk)]
