"""SDXL's sizes from its diffusers configs, without torch: what the memory model multiplies.

:meth:`Architecture.from_config_dir` reads ``unet/``, ``vae/``, ``text_encoder/`` and
``text_encoder_2/config.json`` and lays the networks out as diffusers and transformers
build them, layer by layer:

- the UNet (``diffusers/models/unets/unet_2d_condition.py: UNet2DConditionModel.__init__``,
  the blocks of ``unet_2d_blocks.py``, ``ResnetBlock2D`` in ``resnet.py``,
  ``Transformer2DModel`` / ``BasicTransformerBlock`` with ``use_linear_projection``) as
  :class:`Block` s in forward order, each with its level (feature maps halve per level),
  channels and weight-bearing :class:`Layer` s;
- the text encoders (``transformers``' ``CLIPTextModel`` / ``CLIPTextModelWithProjection``);
- the VAE (``diffusers/models/autoencoders/vae.py: Encoder, Decoder``): parameter count and
  the encoder's layers, which run when latents are not cached.

Parameter counts equal the meta-built models' (a test checks both the shipped SDXL and the
miniature). LoRA targets are ``trainer.lora.targets``' (Standard: the transformer blocks'
Linears and the encoders' attention/MLP; Kohya LoCon adds the resnets' and samplers'
layers), found here by where a layer sits rather than by regex.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainer.estimate.layers import Block, Layer, resnet, sampler, transformer

# trainer.lora.targets.LOCON (that module imports torch; a test checks they are the same)
LOCON = "Kohya LoCon"

CLIP_POSITIONS = 77  # one chunk: BOS, 75 tokens, EOS (trainer/models/text.py)


@dataclass(frozen=True)
class TextEncoder:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    positions: int
    projection: int  # 0: no text_projection (CLIPTextModel)
    activation: str  # hidden_act: its saved tensors differ (quick_gelu keeps more than gelu)

    @property
    def parameters(self) -> int:
        h = self.hidden
        per_layer = 4 * (h * h + h) + 2 * h * self.intermediate + self.intermediate + h + 4 * h
        embeddings = (self.vocab + self.positions) * h
        return embeddings + self.layers * per_layer + 2 * h + self.projection * h

    def layer_shapes(self) -> tuple[Layer, ...]:
        """One encoder layer's Linears: q, k, v, out, fc1, fc2 (all Standard LoRA targets)."""
        h, i = self.hidden, self.intermediate
        attention = tuple(Layer(n, h, h, lora="standard") for n in ("q", "k", "v", "out"))
        return (
            *attention,
            Layer("fc1", h, i, lora="standard"),
            Layer("fc2", i, h, lora="standard"),
        )

    @classmethod
    def from_config(cls, c: dict[str, Any], with_projection: bool) -> TextEncoder:
        return cls(
            c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
            c["num_attention_heads"], c["vocab_size"], c["max_position_embeddings"],
            c["projection_dim"] if with_projection else 0, c.get("hidden_act", "quick_gelu"),
        )  # fmt: skip


@dataclass(frozen=True)
class UNet:
    blocks: tuple[Block, ...]  # forward order, conv_in to conv_out
    embedding_layers: tuple[Layer, ...]  # time and text_time embeddings (one row a sample)
    in_channels: int
    context: int  # cross_attention_dim

    @property
    def parameters(self) -> int:
        blocks = sum(block.parameters for block in self.blocks)
        return blocks + sum(layer.parameters for layer in self.embedding_layers)

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> UNet:
        _check_unet(c)
        levels = _Levels.from_config(c)
        k_in, k_out, first = c["conv_in_kernel"], c["conv_out_kernel"], levels.channels[0]
        conv_in = Layer("conv_in", c["in_channels"], first, k_in, reads="input")
        blocks = [Block("conv_in", "conv_in", 0, c["in_channels"], first, (conv_in,),
                        skip_out=True)]  # fmt: skip
        down, skips = levels.down(c["down_block_types"])
        blocks += down + levels.middle() + levels.up(c["up_block_types"], [first, *skips])
        conv_out = Layer("conv_out", first, c["out_channels"], k_out, reads="input")
        blocks.append(Block("conv_out", "conv_out", 0, first, c["out_channels"], (conv_out,),
                            norms=2 * first))  # fmt: skip
        temb = levels.temb
        embedding = [Layer("time_embedding.linear_1", first, temb),
                     Layer("time_embedding.linear_2", temb, temb)]  # fmt: skip
        if c.get("addition_embed_type") == "text_time":
            added = c["projection_class_embeddings_input_dim"]
            embedding += [Layer("add_embedding.linear_1", added, temb),
                          Layer("add_embedding.linear_2", temb, temb)]  # fmt: skip
        return cls(tuple(blocks), tuple(embedding), c["in_channels"], c["cross_attention_dim"])


@dataclass(frozen=True)
class _Levels:
    """The UNet's per-level sizes, and its down, middle and up paths built from them."""

    channels: list[int]
    heads: list[int]
    depths: list[int]
    per_block: list[int]
    temb: int
    context: int
    linear: bool

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> _Levels:
        channels = list(c["block_out_channels"])
        n = len(channels)
        return cls(
            channels,
            # UNet2DConditionModel.__init__: num_attention_heads or attention_head_dim
            _per_level(c["num_attention_heads"] or c["attention_head_dim"], n),
            _per_level(c["transformer_layers_per_block"], n),
            _per_level(c["layers_per_block"], n),
            c["time_embedding_dim"] or 4 * channels[0],
            c["cross_attention_dim"],
            c["use_linear_projection"],
        )

    def _attention(self, name: str, level: int) -> Block:
        return transformer(name, level, self.channels[level], self.depths[level],
                           self.heads[level], self.context, self.linear)  # fmt: skip

    def down(self, kinds: list[str]) -> tuple[list[Block], list[int]]:
        """The down blocks, and the channels of each skip connection they leave."""
        blocks: list[Block] = []
        skips: list[int] = []
        for i, kind in enumerate(kinds):
            cin, cout = self.channels[max(i - 1, 0)], self.channels[i]
            for j in range(self.per_block[i]):
                blocks.append(resnet(f"down_blocks.{i}.resnets.{j}", i, cin, cout, self.temb))
                if kind.startswith("CrossAttn"):
                    blocks.append(self._attention(f"down_blocks.{i}.attentions.{j}", i))
                blocks[-1] = replace(blocks[-1], skip_out=True)
                skips.append(cout)
                cin = cout
            if i < len(kinds) - 1:
                down = sampler(f"down_blocks.{i}.downsamplers.0", "downsample", i + 1, cout)
                blocks.append(replace(down, skip_out=True))
                skips.append(cout)
        return blocks, skips

    def middle(self) -> list[Block]:
        last, c = len(self.channels) - 1, self.channels[-1]
        # UNetMidBlock2DCrossAttn.forward runs resnets[0] outside a checkpoint.
        first = replace(resnet("mid_block.resnets.0", last, c, c, self.temb), checkpointed=False)
        attention = self._attention("mid_block.attentions.0", last)
        return [first, attention, resnet("mid_block.resnets.1", last, c, c, self.temb)]

    def up(self, kinds: list[str], skips: list[int]) -> list[Block]:
        """The up blocks; each resnet concatenates the last skip connection left."""
        blocks: list[Block] = []
        previous = self.channels[-1]
        for i, kind in enumerate(kinds):
            level = len(self.channels) - 1 - i
            out = self.channels[level]
            for j in range(self.per_block[level] + 1):
                skip = skips.pop()
                block = resnet(f"up_blocks.{i}.resnets.{j}", level, previous + skip, out, self.temb)
                blocks.append(replace(block, skip_in=skip))
                if kind.startswith("CrossAttn"):
                    blocks.append(self._attention(f"up_blocks.{i}.attentions.{j}", level))
                previous = out
            if level > 0:
                blocks.append(sampler(f"up_blocks.{i}.upsamplers.0", "upsample", level - 1, out))
        return blocks


def _per_level(value: int | list[int], levels: int) -> list[int]:
    return list(value) if isinstance(value, list | tuple) else [value] * levels


_UNET_SUPPORTED = {
    "down_block_types": {"DownBlock2D", "CrossAttnDownBlock2D"},
    "up_block_types": {"UpBlock2D", "CrossAttnUpBlock2D"},
}


def _check_unet(c: dict[str, Any]) -> None:
    """Refuse what the layout above doesn't build (it would count another network)."""
    problems = [key for key, allowed in _UNET_SUPPORTED.items() if not set(c[key]) <= allowed]
    if c.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        problems.append("mid_block_type")
    for key in ("class_embed_type", "encoder_hid_dim", "reverse_transformer_layers_per_block"):
        if c.get(key) is not None:
            problems.append(key)
    if c.get("only_cross_attention"):
        problems.append("only_cross_attention")
    if c.get("resnet_time_scale_shift", "default") != "default":
        problems.append("resnet_time_scale_shift")
    if problems:
        raise ValueError(f"the memory model doesn't know this UNet layout: {problems}")


def _vae_resnet(name: str, level: int, cin: int, cout: int) -> Block:
    return resnet(name, level, cin, cout, temb=0)


def _vae_middle(prefix: str, level: int, channels: int) -> list[Block]:
    """``UNetMidBlock2D``: resnet, one-head attention (GroupNorm, q/k/v/out, biased), resnet."""
    c = channels
    attention = Block(
        f"{prefix}.mid_block.attentions.0", "attention", level, c, c,
        tuple(Layer(f"{prefix}.mid_block.attentions.0.{n}", c, c)
              for n in ("to_q", "to_k", "to_v", "to_out.0")),
        norms=2 * c, heads=1,
    )  # fmt: skip
    return [
        _vae_resnet(f"{prefix}.mid_block.resnets.0", level, c, c),
        attention,
        _vae_resnet(f"{prefix}.mid_block.resnets.1", level, c, c),
    ]


@dataclass(frozen=True)
class Vae:
    encoder: tuple[Block, ...]  # image to latent moments, forward order (level 0: the image)
    decoder_parameters: int
    latent_channels: int
    first_channels: int

    @property
    def parameters(self) -> int:
        return sum(block.parameters for block in self.encoder) + self.decoder_parameters

    @property
    def downscale(self) -> int:
        """Image pixels per latent pixel, per side (8 for SDXL)."""
        return 2 ** max(block.level for block in self.encoder)

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> Vae:
        channels, per_block = list(c["block_out_channels"]), c["layers_per_block"]
        latent, last = c["latent_channels"], len(channels) - 1
        first = Layer("encoder.conv_in", c["in_channels"], channels[0], 3)
        encoder = [Block("encoder.conv_in", "conv_in", 0, c["in_channels"], channels[0], (first,))]
        cin = channels[0]
        for i, cout in enumerate(channels):
            for j in range(per_block):
                encoder.append(_vae_resnet(f"encoder.down_blocks.{i}.resnets.{j}", i, cin, cout))
                cin = cout
            if i < last:
                encoder.append(sampler(f"encoder.down_blocks.{i}.downsamplers.0", "downsample",
                                        i + 1, cout))  # fmt: skip
        encoder += _vae_middle("encoder", last, channels[-1])
        encoder.append(Block("encoder.conv_out", "conv_out", last, channels[-1], 2 * latent,
                             (Layer("encoder.conv_out", channels[-1], 2 * latent, 3),
                              Layer("quant_conv", 2 * latent, 2 * latent)),
                             norms=2 * channels[-1]))  # fmt: skip
        decoder = [Layer("decoder.conv_in", latent, channels[-1], 3),
                   Layer("post_quant_conv", latent, latent)]  # fmt: skip
        decoder_blocks = _vae_middle("decoder", last, channels[-1])
        previous = channels[-1]
        for i, cout in enumerate(reversed(channels)):
            for j in range(per_block + 1):
                name = f"decoder.up_blocks.{i}.resnets.{j}"
                decoder_blocks.append(_vae_resnet(name, last - i, previous, cout))
                previous = cout
            if i < last:
                decoder.append(Layer(f"decoder.up_blocks.{i}.upsamplers.0.conv", cout, cout, 3))
        decoder.append(Layer("decoder.conv_out", channels[0], c["out_channels"], 3))
        decoder_parameters = (
            sum(layer.parameters for layer in decoder)
            + sum(block.parameters for block in decoder_blocks)
            + 2 * channels[0]  # conv_norm_out
        )
        return cls(tuple(encoder), decoder_parameters, latent, channels[0])


def lora_kinds(lora_type: str, conv_dim: int) -> frozenset[str]:
    """The ``Layer.lora`` values a network type injects into (``trainer/lora/targets.py``)."""
    if lora_type != LOCON:
        return frozenset({"standard"})
    return frozenset({"standard", "locon", "locon_conv"} if conv_dim else {"standard", "locon"})


@dataclass(frozen=True)
class Architecture:
    """SDXL's four networks as the memory and FLOP model needs them."""

    unet: UNet
    vae: Vae
    text_encoders: tuple[TextEncoder, TextEncoder]

    @classmethod
    def from_config_dir(cls, config_dir: Path) -> Architecture:
        """Read the diffusers component configs of ``config_dir`` (``unet/config.json``, ...)."""

        def read(component: str) -> dict[str, Any]:
            data: dict[str, Any] = json.loads((config_dir / component / "config.json").read_text())
            return data

        return cls(
            UNet.from_config(read("unet")),
            Vae.from_config(read("vae")),
            (
                TextEncoder.from_config(read("text_encoder"), with_projection=False),
                TextEncoder.from_config(read("text_encoder_2"), with_projection=True),
            ),
        )

    def parameter_counts(self) -> dict[str, int]:
        """Parameters by component, as ``sum(p.numel() for p in module.parameters())``."""
        te1, te2 = self.text_encoders
        return {
            "unet": self.unet.parameters,
            "vae": self.vae.parameters,
            "text_encoder": te1.parameters,
            "text_encoder_2": te2.parameters,
        }

    def lora_layers(
        self, lora_type: str, conv_dim: int, *, unet: bool, text: bool
    ) -> list[tuple[str, Layer]]:
        """(part, layer) of every module ``build_network`` injects LoRA into, in its order:
        the UNet's, then each encoder's (``trainer/lora/network.py: apply_lora``)."""
        kinds = lora_kinds(lora_type, conv_dim)
        found: list[tuple[str, Layer]] = []
        if unet:
            found += [
                ("unet", layer)
                for block in self.unet.blocks
                for layer in block.layers
                if layer.lora in kinds
            ]
        if text:
            for encoder in self.text_encoders:
                found += [
                    ("textencoder", layer) for layer in encoder.layer_shapes()
                ] * encoder.layers
        return found
