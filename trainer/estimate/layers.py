"""The layers and blocks SDXL's networks are laid out in (:mod:`trainer.estimate.architecture`).

A :class:`Layer` is a weight-bearing Linear or Conv2d: its parameters, its LoRA module's
shapes, and what it multiplies (which decides its FLOPs and whether autograd runs a
backward matmul for it). A :class:`Block` is a module the step runs, and checkpoints, as one:
a diffusers ``ResnetBlock2D`` (``diffusers/models/resnet.py``), a ``Transformer2DModel`` of
``BasicTransformerBlock`` s (``diffusers/models/transformers/transformer_2d.py``), a
down- or upsampler, the UNet's first and last convs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    """A Linear (``kernel`` 1) or a k×k Conv2d; ``lora`` says which LoRA it gets."""

    name: str
    fan_in: int  # in_features, or in_channels
    out: int
    kernel: int = 1
    bias: bool = True
    lora: str = ""  # "standard", "locon" (network_dim), "locon_conv" (conv_dim) or ""
    # What it multiplies: the block's input, the block's own inner state, the text context
    # (attn2's to_k / to_v: one row a token) or the time embedding (one row a sample).
    reads: str = "inner"
    conv: bool = False  # a Conv2d (its LoRA weights are 4-D), else a Linear

    @property
    def lora_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of peft's down and up weights at rank 1 (rank multiplies dimension 0 of
        the down, dimension 1 of the up)."""
        if self.conv:
            return (1, self.fan_in, self.kernel, self.kernel), (self.out, 1, 1, 1)
        return (1, self.fan_in), (self.out, 1)

    @property
    def parameters(self) -> int:
        return self.fan_in * self.out * self.kernel**2 + (self.out if self.bias else 0)

    def lora_parameters(self, rank: int) -> int:
        """peft's pair: down ``fan_in × rank × k²`` and up ``rank × out`` (1×1), no bias."""
        return rank * (self.fan_in * self.kernel**2 + self.out)


@dataclass(frozen=True)
class Block:
    """A UNet module the step runs as one unit (and checkpoints as one, where it does)."""

    name: str
    kind: str  # conv_in, resnet, transformer, downsample, upsample, conv_out
    level: int  # its output's level: level l maps are the latent's, halved l times
    in_channels: int
    out_channels: int
    layers: tuple[Layer, ...]
    norms: int = 0  # parameters of its GroupNorm / LayerNorm layers
    depth: int = 0  # BasicTransformerBlocks of a transformer
    heads: int = 0
    skip_in: int = 0  # channels concatenated from a down block's output (up blocks)
    skip_out: bool = False  # its output is also kept for an up block (a skip connection)
    # diffusers checkpoints each resnet (but the mid block's first) and transformer block
    checkpointed: bool = False

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers) + self.norms


def resnet(name: str, level: int, cin: int, cout: int, temb: int) -> Block:
    """``ResnetBlock2D``: norm1, conv1 (3×3), time_emb_proj, norm2, conv2, 1×1 shortcut."""
    layers = [Layer(f"{name}.conv1", cin, cout, 3, lora="locon_conv", reads="input", conv=True)]
    if temb:
        layers.append(Layer(f"{name}.time_emb_proj", temb, cout, lora="locon", reads="temb"))
    layers.append(Layer(f"{name}.conv2", cout, cout, 3, lora="locon_conv", conv=True))
    if cin != cout:
        layers.append(
            Layer(f"{name}.conv_shortcut", cin, cout, 1, lora="locon", reads="input", conv=True)
        )
    return Block(
        name,
        "resnet",
        level,
        cin,
        cout,
        tuple(layers),
        norms=2 * (cin + cout),
        checkpointed=bool(temb),
    )


def transformer(
    name: str, level: int, channels: int, depth: int, heads: int, context: int, linear: bool
) -> Block:
    """``Transformer2DModel`` of ``depth`` ``BasicTransformerBlock`` s; its projections are
    Linears with ``use_linear_projection`` (SDXL), 1×1 convs without."""
    c = channels
    layers = [Layer(f"{name}.proj_in", c, c, lora="standard", reads="input", conv=not linear)]
    for index in range(depth):
        block = f"{name}.transformer_blocks.{index}"
        for attention, kv in (("attn1", c), ("attn2", context)):
            layers.append(Layer(f"{block}.{attention}.to_q", c, c, bias=False, lora="standard"))
            for to in ("to_k", "to_v"):
                reads = "context" if attention == "attn2" else "inner"
                layers.append(
                    Layer(f"{block}.{attention}.{to}", kv, c, bias=False, lora="standard",
                          reads=reads)
                )  # fmt: skip
            layers.append(Layer(f"{block}.{attention}.to_out.0", c, c, lora="standard"))
        layers.append(Layer(f"{block}.ff.net.0.proj", c, 8 * c, lora="standard"))  # GEGLU
        layers.append(Layer(f"{block}.ff.net.2", 4 * c, c, lora="standard"))
    layers.append(Layer(f"{name}.proj_out", c, c, lora="standard", conv=not linear))
    norms = 2 * c + depth * 3 * 2 * c  # the GroupNorm, each block's three LayerNorms
    return Block(
        name, "transformer", level, c, c, tuple(layers), norms, depth, heads, checkpointed=True
    )


def sampler(name: str, kind: str, level: int, channels: int) -> Block:
    layer = Layer(
        f"{name}.conv", channels, channels, 3, lora="locon_conv", reads="input", conv=True
    )
    return Block(name, kind, level, channels, channels, (layer,))
