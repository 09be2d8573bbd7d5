"""Module names in the original (ldm / SGM) SDXL layout.

SDXL checkpoints as Stability and Pony Diffusion ship them, and the Kohya LoRA
key names that A1111, Forge and ComfyUI expect, use the original UNet names
(``input_blocks.4.1.transformer_blocks.0.attn1.to_q``) while diffusers builds
the same network as ``down_blocks.1.attentions.0...``. This module is the one
explicit map between the two (sd-scripts' ``make_unet_conversion_map`` in
``library/sdxl_model_util.py``), used both for LoRA key names and to write the miniature
single-file checkpoints the tests train on.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# SDXL topology: three resolution levels, two resnets per down level, three per
# up level; attention (Transformer2DModel) on down levels 1-2 and up levels 0-1.
_DOWN_LEVELS = 3
_DOWN_RESNETS = 2
_UP_RESNETS = 3

_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _unet_block_prefixes() -> dict[str, str]:
    """diffusers block prefix -> ldm block prefix, for every block of the UNet."""
    table: dict[str, str] = {}
    for level in range(_DOWN_LEVELS):
        for j in range(_DOWN_RESNETS):
            ldm = f"input_blocks.{3 * level + j + 1}"
            table[f"down_blocks.{level}.resnets.{j}"] = f"{ldm}.0"
            table[f"down_blocks.{level}.attentions.{j}"] = f"{ldm}.1"
        if level < _DOWN_LEVELS - 1:
            table[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{3 * level + 3}.0.op"
        for j in range(_UP_RESNETS):
            ldm = f"output_blocks.{3 * level + j}"
            table[f"up_blocks.{level}.resnets.{j}"] = f"{ldm}.0"
            table[f"up_blocks.{level}.attentions.{j}"] = f"{ldm}.1"
        if level < _DOWN_LEVELS - 1:
            table[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{3 * level + 2}.2.conv"
    table["mid_block.attentions.0"] = "middle_block.1"
    for j in range(2):
        table[f"mid_block.resnets.{j}"] = f"middle_block.{2 * j}"
    return table


_UNET_BLOCKS = _unet_block_prefixes()
_BLOCK_PATTERN = re.compile(
    r"^((?:down_blocks|up_blocks)\.\d+\.(?:resnets|attentions)\.\d+"
    r"|(?:down_blocks|up_blocks)\.\d+\.(?:downsamplers|upsamplers)\.0\.conv"
    r"|mid_block\.(?:resnets|attentions)\.\d+)(.*)$"
)


def unet_to_ldm(path: str) -> str:
    """Map a diffusers UNet module or parameter path to its ldm name.

    >>> unet_to_ldm("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
    'input_blocks.4.1.transformer_blocks.0.attn1.to_q'
    """
    for diffusers_name, ldm_name in _TOP_LEVEL.items():
        if path == diffusers_name or path.startswith(diffusers_name + "."):
            return ldm_name + path[len(diffusers_name) :]
    match = _BLOCK_PATTERN.match(path)
    if match is None:
        raise KeyError(f"no ldm name for UNet path {path!r}")
    block, rest = match.groups()
    ldm_block = _UNET_BLOCKS[block]
    if ".resnets." in block and rest:
        part, _, tail = rest[1:].partition(".")
        rest = "." + _RESNET_PARTS.get(part, part) + ("." + tail if tail else "")
    return ldm_block + rest


# --- VAE -----------------------------------------------------------------------

_VAE_LEVELS = 4


def _vae_block_prefixes() -> dict[str, str]:
    table = {
        "encoder.mid_block.attentions.0": "encoder.mid.attn_1",
        "decoder.mid_block.attentions.0": "decoder.mid.attn_1",
    }
    for i in range(2):
        table[f"encoder.mid_block.resnets.{i}"] = f"encoder.mid.block_{i + 1}"
        table[f"decoder.mid_block.resnets.{i}"] = f"decoder.mid.block_{i + 1}"
    for i in range(_VAE_LEVELS):
        for j in range(2):
            table[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        for j in range(3):
            up = _VAE_LEVELS - 1 - i
            table[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{up}.block.{j}"
        if i < _VAE_LEVELS - 1:
            table[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
            up = _VAE_LEVELS - 1 - i
            table[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{up}.upsample"
    return table


_VAE_BLOCKS = _vae_block_prefixes()
_VAE_PARTS = {
    "conv_shortcut": "nin_shortcut",
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def vae_to_ldm(path: str) -> str:
    """Map a diffusers AutoencoderKL parameter path to its ldm name."""
    for diffusers_name in sorted(_VAE_BLOCKS, key=len, reverse=True):
        if path.startswith(diffusers_name + "."):
            rest = path[len(diffusers_name) + 1 :]
            for part, ldm_part in _VAE_PARTS.items():
                if rest.startswith(part + "."):
                    rest = ldm_part + rest[len(part) :]
                    break
            return f"{_VAE_BLOCKS[diffusers_name]}.{rest}"
    # conv_in, conv_out, quant_conv and post_quant_conv keep their names.
    return path.replace(".conv_norm_out.", ".norm_out.")


# --- text encoders -------------------------------------------------------------

_OPENCLIP_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def text_model_path(path: str) -> str:
    """Normalise a CLIP text-model path to the ``text_model.``-prefixed form.

    transformers >= 5.6 drops the ``text_model.`` level from ``CLIPTextModel``
    while ``CLIPTextModelWithProjection`` keeps it; checkpoints and Kohya keys
    always have it, so names are mapped explicitly rather than read from
    whatever ``named_modules()`` prints today.
    """
    if path.startswith("text_model.") or path.startswith("text_projection"):
        return path
    return "text_model." + path


def openclip_layer_to_ldm(path: str) -> str:
    """Map ``text_model.encoder.layers.N.<part>`` to OpenCLIP's resblock name."""
    match = re.match(r"^text_model\.encoder\.layers\.(\d+)\.(.+)$", path)
    if match is None:
        raise KeyError(path)
    layer, rest = match.groups()
    for part, ldm_part in _OPENCLIP_LAYER_PARTS.items():
        if rest.startswith(part + "."):
            return f"transformer.resblocks.{layer}.{ldm_part}{rest[len(part) :]}"
    raise KeyError(path)


PathMap = Callable[[str], str]
