"""The step's activations and temporaries, walked block by block as autograd holds them.

A training step's peak is the most it holds at any moment: the frozen weights and the LoRA
state throughout, plus whatever the forward keeps for backward (activations) and the
backward's own tensors in flight (temporaries), which rise and fall block by block. So the
step is replayed over the UNet's blocks (``trainer.estimate.layers``) in the order it runs:

- forward: each block adds what it keeps for backward (``kept``; with gradient
  checkpointing little more than its input) and passes through a transient high (``fw``)
  above what is already kept;
- backward, in reverse: entering a block, what the blocks up to it keep is still alive
  (``alive``, each block's share), plus the LoRA gradients and the temporaries the blocks
  already passed carry (``held``: the gradient in flight, the skip connections' gradients
  waiting for their down block); inside it, recomputation (with checkpointing) and
  backward's tensors rise above that (``bw_act``, ``bw_temp``). ``alive`` and ``held`` are
  fitted as sums over blocks, so that what backward enters each block with is right, not
  only each block's difference.

The text encoders run before the UNet (when their outputs aren't cached), the VAE before
both (when latents aren't cached: ``no_grad``, fp32).

Each quantity of each block kind is bytes per element of a few feature-map sizes
(:func:`block_features`: batch × positions × channels, and the like), times coefficients
fitted to traces (:mod:`trainer.estimate.coefficients`, from ``bench/memory_model.py --fit``),
for fp16/bf16 autocast; without autocast (fp32) every element is twice as large, less the
fp32 copies autocast makes: one scale for activations, one for temporaries
(:data:`FP32_ACTIVATIONS`, :data:`FP32_TEMPORARIES`, an approximation).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from trainer.estimate.architecture import Architecture, TextEncoder
from trainer.estimate.coefficients import (
    COEFFICIENTS,
    FP32_ACTIVATIONS,
    FP32_TEMPORARIES,
    VAE_ENCODE,
)
from trainer.estimate.flops import CLIP
from trainer.estimate.paths import BlockPath, Step, unet_paths

QUANTITIES = ("kept", "fw", "bw_act", "bw_temp", "held", "alive")
SUMMED = ("kept", "alive", "held")  # fitted as sums over blocks (and encoder layers)
SIGNED = SUMMED  # may be negative: a block may free what the ones before it kept


def block_kind(path: BlockPath) -> str:
    return path.block.kind if path.recorded else "frozen"


def block_mode(path: BlockPath, step: Step) -> str:
    """The block's coefficient table: ``ckpt`` where the step checkpoints it, else ``full``."""
    return "ckpt" if step.checkpointing and path.block.checkpointed else "full"


def block_features(path: BlockPath, step: Step, arch: Architecture) -> dict[str, int]:
    """Element counts a block's bytes are proportional to (see :mod:`trainer.estimate.walk`)."""
    b = path.block
    n = step.batch * step.positions(b.level)
    if not path.recorded:
        return {"out": n * b.out_channels, "skip": n * b.out_channels * b.skip_out}
    features = {
        "map": n * b.out_channels,
        "in": n * b.in_channels * path.input_grad,
        "in_frozen": n * b.in_channels * (not path.input_grad),
    }
    # Autocast caches each fp16 cast of a trained (leaf) weight until it exits
    # (aten/src/ATen/autocast_mode.cpp: cached_cast): the block's LoRA weights, once.
    features["weights"] = (
        sum(step.lora_rank(layer) * layer.lora_parameters(1) for layer in b.layers)
        if path.trained
        else 0
    )
    if b.kind == "resnet":
        features["cat"] = n * b.in_channels if b.skip_in else 0
        features["skip"] = n * b.skip_in * path.skip_grad
        features["skip_frozen"] = n * b.skip_in * (not path.skip_grad) if b.skip_in else 0
        features["temb"] = n * b.out_channels * path.temb_grad  # a trained text encoder's
        ranks = sum(step.lora_rank(layer) for layer in b.layers) if path.trained else 0
        features["lora"] = n * (b.in_channels + b.out_channels) if path.trained else 0
        features["rank"] = n * ranks
    elif b.kind == "transformer":
        features["blocks"] = n * b.out_channels * b.depth
        features["rank"] = n * step.rank * b.depth if path.trained else 0
        # Cross-attention over the text: batch × text positions × (context + channels)
        features["text"] = step.batch * step.context * (arch.unet.context + b.out_channels)
        features["text"] *= b.depth
        # With a trained text encoder the context requires grad, and with checkpointing each
        # block's backward leaves a map-sized tensor behind until the step ends.
        features["context"] = n * b.out_channels * b.depth * path.context_grad
    else:
        features["lora"] = n * b.out_channels if path.trained else 0
    return features


def text_features(encoder: TextEncoder, step: Step) -> dict[str, int]:
    """One encoder layer's: its sequences' hidden states, LoRA activations and weights."""
    rows = step.batch * step.chunks * CLIP
    weights = sum(layer.lora_parameters(step.rank) for layer in encoder.layer_shapes())
    return {
        "hidden": rows * encoder.hidden,
        "rank": rows * step.rank * step.text,
        "weights": weights * step.text,
    }


def _text_mode(step: Step) -> str:
    return ("ckpt" if step.checkpointing else "full") if step.text else "frozen"


def text_alive_features(step: Step, arch: Architecture) -> dict[str, int]:
    """What the encoders keep through the UNet's backward, as ``alive`` features (keyed
    "mode.kind.feature"): every layer's."""
    if step.text_cached:
        return {}
    found: dict[str, int] = {}
    for encoder in arch.text_encoders:
        prefix = f"{_text_mode(step)}.text_{encoder.activation}"
        for name, count in text_features(encoder, step).items():
            key = f"{prefix}.{name}"
            found[key] = found.get(key, 0) + encoder.layers * count
    return found


def _summed(quantity: str, features: dict[str, int]) -> float:
    """``quantity`` of features keyed "mode.kind.feature" (see :func:`text_alive_features`)."""
    total = 0.0
    for key, count in features.items():
        table, _, name = key.rpartition(".")
        total += COEFFICIENTS.get(f"{quantity}.{table}", {}).get(name, 0.0) * count
    return total


def _value(key: str, features: dict[str, int]) -> float:
    table = COEFFICIENTS.get(key, {})
    return sum(table.get(name, 0.0) * count for name, count in features.items())


def predicted(key: str, features: dict[str, int]) -> float:
    """The model's bytes for an observation of ``bench/memory_profile.py``: a quantity of one
    block ("quantity.mode.kind") or, for "alive" and "held", summed over blocks."""
    return _summed(key, features) if key in SUMMED else _value(key, features)


@dataclass(frozen=True)
class Moment:
    """Bytes held at one moment of the step, beyond the weights and optimizer state."""

    activations: float
    temporaries: float
    gradients: float  # LoRA gradients already written (before the optimizer step)

    @property
    def total(self) -> float:
        return self.activations + self.temporaries + self.gradients


@dataclass(frozen=True)
class _Block:
    path: BlockPath
    values: dict[str, float]  # quantity -> bytes
    lora_bytes: int


def _blocks(arch: Architecture, step: Step, lora_bytes: dict[str, int]) -> list[_Block]:
    found = []
    for path in unet_paths(arch.unet, step):
        kind, mode = block_kind(path), block_mode(path, step)
        features = block_features(path, step, arch)
        values = {q: _value(f"{q}.{mode}.{kind}", features) for q in QUANTITIES}
        values.update({q: max(0.0, v) for q, v in values.items() if q not in SIGNED})
        found.append(_Block(path, values, lora_bytes.get(path.block.name, 0)))
    return found


def _text_high(arch: Architecture, step: Step, quantity: str) -> float:
    """The encoders' highest forward (``fw``) or backward (``bw_act``) excursion of a layer."""
    if step.text_cached:
        return 0.0
    return max(
        _value(f"{quantity}.{_text_mode(step)}.text_{encoder.activation}",
               text_features(encoder, step))
        for encoder in arch.text_encoders
    )  # fmt: skip


def moments(
    arch: Architecture, step: Step, lora_bytes: dict[str, int], accumulating: bool
) -> Iterator[Moment]:
    """Every candidate for the step's peak, in the order the step passes them.

    ``lora_bytes``: LoRA gradient bytes by UNet block name, and the encoders' under
    "text"; ``accumulating``: gradients accumulate over micro-steps, so all of them are
    held from the start (else each is written as backward reaches its block)."""
    scale = 1.0 if step.autocast else FP32_ACTIVATIONS
    temp = 1.0 if step.autocast else FP32_TEMPORARIES
    grads = float(sum(lora_bytes.values())) if accumulating else 0.0
    if not step.latents_cached:
        pixels = step.batch * step.image_positions(0) * arch.vae.first_channels
        yield Moment(VAE_ENCODE * pixels, 0.0, grads)
    text = text_alive_features(step, arch)
    text_kept = scale * _summed("kept", text)
    yield Moment(text_kept + scale * _text_high(arch, step, "fw"), 0.0, grads)
    blocks = _blocks(arch, step, lora_bytes)
    alive = text_kept
    for block in blocks:
        yield Moment(alive + scale * block.values["fw"], 0.0, grads)
        alive += scale * block.values["kept"]
    # Backward, in reverse: entering a block, the kept tensors of the blocks up to it (and of
    # the encoders) are alive, and what the blocks already passed hold.
    text_alive = scale * _summed("alive", text)
    alive = text_alive
    alive_at = []
    for block in blocks:
        alive += scale * block.values["alive"]
        alive_at.append(alive)
    held = 0.0
    for block, alive in reversed(list(zip(blocks, alive_at, strict=True))):
        if not block.path.recorded:
            continue
        if not accumulating:
            grads += block.lora_bytes
        v = block.values
        yield Moment(alive + scale * v["bw_act"], held + temp * v["bw_temp"], grads)
        held += temp * v["held"]
    if not accumulating:
        grads += lora_bytes.get("text", 0)
    # The UNet's backward is over: what it held is freed; the encoders' own backward's high
    # (its temporaries fitted with it).
    yield Moment(text_alive + scale * _text_high(arch, step, "bw_act"), 0.0, grads)
