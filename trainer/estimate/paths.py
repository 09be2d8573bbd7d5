"""One step's shapes, and which of SDXL's tensors autograd follows: what memory and FLOPs
both depend on, without torch.

Autograd records (saves tensors for, and later runs backward through) an op only when one
of its inputs requires grad. In a LoRA step the frozen base requires none, so the graph
starts where the first trained LoRA, or a trained text encoder's output, joins in:
with the UNet's Standard LoRA alone, ``conv_in``, the first resnets and the first
downsampler run as under ``no_grad`` (nothing saved, no backward, no recomputation); a
trained text encoder brings the pooled embedding into every resnet's time embedding and
its context into every cross-attention, so the whole UNet is recorded. :func:`unet_paths`
follows that through the blocks in forward order, skip connections included.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from trainer.estimate.architecture import Block, Layer, UNet


@dataclass(frozen=True)
class Step:
    """The shapes and switches of one micro-step (one batch of the largest bucket)."""

    batch: int
    latent_hw: tuple[int, int]  # the UNet's level-0 map (the latent), height and width
    image_hw: tuple[int, int]  # the bucket, in pixels
    context: int  # positions of the UNet's text context: max_token_length + 2
    chunks: int  # 77-position sequences each caption is encoded in, per encoder
    rank: int
    conv_rank: int
    lora_kinds: frozenset[str]  # Layer.lora values that get a LoRA module
    unet: bool  # the UNet's LoRA trains
    text: bool  # the text encoders' LoRA trains
    checkpointing: bool
    latents_cached: bool
    text_cached: bool
    act_bytes: int  # bytes of an activation element: 2 under fp16/bf16 autocast, 4 without
    autocast: bool

    def positions(self, level: int) -> int:
        """Map positions at a UNet level (each level halves, rounding up: stride-2 convs
        with padding 1)."""
        h, w = self.latent_hw
        scale = 2**level
        return math.ceil(h / scale) * math.ceil(w / scale)

    def image_positions(self, level: int) -> int:
        """Pixels at a VAE encoder level (its downsamplers halve exactly)."""
        h, w = self.image_hw
        return (h // 2**level) * (w // 2**level)

    def lora_rank(self, layer: Layer) -> int:
        """The rank of ``layer``'s LoRA module, 0 when it has none."""
        if layer.lora not in self.lora_kinds:
            return 0
        return self.conv_rank if layer.lora == "locon_conv" else self.rank


@dataclass(frozen=True)
class BlockPath:
    """A UNet block and what of it autograd records."""

    block: Block
    input_grad: bool  # its input requires grad (so its entry layers run backward)
    recorded: bool  # its output requires grad: its ops save tensors and run backward
    trained: bool  # it holds trained LoRA modules
    temb_grad: bool  # the time embedding it adds requires grad
    context_grad: bool  # the text context its cross-attention reads requires grad
    skip_grad: bool = False  # the skip connection it concatenates requires grad (up blocks)

    def layer_input_grad(self, layer: Layer) -> bool:
        """Whether the tensor ``layer`` multiplies requires grad (then its base layer runs
        a backward matmul for it)."""
        return {
            "input": self.input_grad,
            "temb": self.temb_grad,
            "context": self.context_grad,
        }.get(layer.reads, self.recorded)


def unet_paths(unet: UNet, step: Step) -> Iterator[BlockPath]:
    """Each block of ``unet`` in forward order with what autograd records of it."""
    flowing = False  # whether the hidden state entering the next block requires grad
    skips: list[bool] = []
    for block in unet.blocks:
        trained = step.unet and any(step.lora_rank(layer) for layer in block.layers)
        skip_grad = skips.pop() if block.skip_in else False
        input_grad = flowing or skip_grad
        joins = {"resnet": step.text, "transformer": step.text}.get(block.kind, False)
        recorded = input_grad or trained or joins
        yield BlockPath(block, input_grad, recorded, trained, step.text, step.text, skip_grad)
        flowing = recorded
        if block.skip_out:
            skips.append(recorded)
