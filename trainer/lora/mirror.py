"""The models as sd-scripts shapes them, for libraries that find layers by name and class.

lycoris-lora (``lycoris/kohya.py: LycorisNetworkKohya``) picks the layers it wraps by
walking ``named_modules()``: a container whose class is in the preset's list (e.g.
``Transformer2DModel``, ``ResnetBlock2D``, ``CrossAttention``) has every Linear / Conv /
Norm inside it wrapped, and names (``conv_in``, regexes) are matched against module
paths; the module's file name is the path with ``.`` → ``_``. kohya_ss runs it on
sd-scripts' own SDXL UNet (``library/sdxl_original_unet.py: SdxlUNet2DConditionModel``),
whose paths are the original ldm ones (``input_blocks.4.1.transformer_blocks.0.attn1``)
and whose attention class is ``CrossAttention``; diffusers builds the same layers under
other paths and classes (``down_blocks.1.attentions.0``, ``Attention``), and has extra
containers sd-scripts has not (``TimestepEmbedding``, which lycoris' presets target).

:func:`sd_scripts_unet` builds a tree of plain containers with sd-scripts' paths and
container class names whose leaves are the diffusers UNet's own layer objects, so the
library sees exactly what it sees in a GUI run and wraps the real layers. Paths come
from :func:`trainer.models.ldm_names.unet_to_ldm`; the container classes from the ldm
layout (``input_blocks.N.M`` is a resnet, a transformer or a sampler, read from the
leaf below it). Only layers with weights are mirrored: nothing else can be wrapped.
"""

from __future__ import annotations

import re

import torch

from trainer.models.ldm_names import unet_to_ldm

_WRAPPABLE = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
_CLASSES: dict[str, type[torch.nn.Module]] = {}

# ldm block (input_blocks.N.M / middle_block.M / output_blocks.N.M) -> its class, by the
# first path component below it (sd-scripts' ResnetBlock2D, Transformer2DModel, samplers).
_BLOCK = re.compile(r"^(?:input_blocks\.\d+\.\d+|middle_block\.\d+|output_blocks\.\d+\.\d+)$")
_BLOCK_CHILD = {
    "in_layers": "ResnetBlock2D", "out_layers": "ResnetBlock2D", "emb_layers": "ResnetBlock2D",
    "skip_connection": "ResnetBlock2D", "op": "Downsample2D", "conv": "Upsample2D",
}  # fmt: skip
_INNER = (
    (re.compile(r"\.transformer_blocks\.\d+$"), "BasicTransformerBlock"),
    (re.compile(r"\.attn[12]$"), "CrossAttention"),
    (re.compile(r"\.ff$"), "FeedForward"),
    (re.compile(r"\.ff\.net\.0$"), "GEGLU"),
)


def _container(name: str) -> torch.nn.Module:
    """An empty module whose class is called ``name`` (the only thing lycoris reads)."""
    if name not in _CLASSES:
        _CLASSES[name] = type(name, (torch.nn.Module,), {"__doc__": f"Stands in for {name}."})
    return _CLASSES[name]()


def sd_scripts_class(path: str, child: str) -> str:
    """The class sd-scripts gives the container at ldm ``path``, whose next component
    towards the leaf is ``child``; "Module" for plain containers."""
    if _BLOCK.match(path):
        return _BLOCK_CHILD.get(child, "Transformer2DModel")
    for pattern, name in _INNER:
        if pattern.search(path):
            return name
    return "Module"


def _place(root: torch.nn.Module, path: str, leaf: torch.nn.Module) -> None:
    parts = path.split(".")
    node = root
    for depth, part in enumerate(parts[:-1]):
        if part not in node._modules:
            prefix = ".".join(parts[: depth + 1])
            node.add_module(part, _container(sd_scripts_class(prefix, parts[depth + 1])))
        child = node._modules[part]
        assert child is not None
        node = child
    node.add_module(parts[-1], leaf)


def sd_scripts_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """A tree with sd-scripts' SDXL paths and container classes over ``unet``'s own layers."""
    root = _container("SdxlUNet2DConditionModel")
    for path, module in unet.named_modules():
        if isinstance(module, _WRAPPABLE):
            _place(root, unet_to_ldm(path), module)
    return root


def text_model_root(encoder: torch.nn.Module) -> torch.nn.Module:
    """The encoder with its ``text_model.`` level, as sd-scripts' pinned transformers has
    it (transformers >= 5.6 drops it from ``CLIPTextModel``: ``ldm_names.text_model_path``)."""
    if hasattr(encoder, "text_model"):
        return encoder
    root = _container("CLIPTextModel")
    root.add_module("text_model", encoder)
    return root
