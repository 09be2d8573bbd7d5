"""Shared by the network-type tests: base layers by Kohya name, fixed-input outputs."""

from __future__ import annotations

import torch

from trainer.models.ldm_names import text_model_path, unet_to_ldm

_UNET_LAYERS = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)


def kohya_layers(parts: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """Kohya module name -> base layer of a model (ldm names, as in the files)."""
    found = {}
    for path, layer in parts["unet"].named_modules():
        if isinstance(layer, _UNET_LAYERS):
            try:
                found["lora_unet_" + unet_to_ldm(path).replace(".", "_")] = layer
            except KeyError:  # a diffusers-only module (no ldm name)
                continue
    for index, key in ((1, "text_encoder"), (2, "text_encoder_2")):
        for path, layer in parts[key].named_modules():
            if isinstance(layer, torch.nn.Linear | torch.nn.LayerNorm):
                found[f"lora_te{index}_" + text_model_path(path).replace(".", "_")] = layer
    return found


@torch.no_grad()
def outputs(parts: dict[str, torch.nn.Module]) -> list[torch.Tensor]:
    """The UNet and both encoders on fixed inputs, in eval mode."""
    generator = torch.Generator().manual_seed(7)
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, 96, generator=generator)
    added = {"text_embeds": torch.randn(1, 64, generator=generator), "time_ids": torch.ones(1, 6)}
    ids = torch.randint(0, 1000, (1, 12), generator=generator)
    for part in parts.values():
        part.eval()
    return [
        parts["unet"](latents, torch.tensor([500]), context, added_cond_kwargs=added).sample,
        parts["text_encoder"](ids).last_hidden_state,
        parts["text_encoder_2"](ids).last_hidden_state,
    ]


def assert_same(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
    for a, b in zip(ours, reference, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), float((a - b).abs().max())


def moved(reference: list[torch.Tensor], other: list[torch.Tensor]) -> bool:
    return any(float((a - b).abs().max()) > 1e-7 for a, b in zip(reference, other, strict=True))
