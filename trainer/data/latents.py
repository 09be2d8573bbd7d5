"""Encode images to SDXL latents, optionally once up front (``cache_latents``).

The SDXL VAE overflows to NaN in fp16, so it always runs in fp32 here; a
non-finite latent stops the run with the image's name rather than poisoning
training silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainer.data.batches import TrainingImage
from trainer.data.images import load_rgb, resize_and_crop, to_tensor
from trainer.errors import NonFiniteLatentError
from trainer.storage import atomic_path


def pixels_for(image: TrainingImage) -> torch.Tensor:
    rgb = resize_and_crop(load_rgb(image.record.path), image.resized, image.bucket)
    return to_tensor(rgb)


def vae_fingerprint(vae: Any) -> str:
    """Identifies the VAE weights, so a disk cache from another model is not reused."""
    first = next(iter(vae.state_dict().values()))
    return hashlib.sha256(first.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


@torch.no_grad()
def encode(
    vae: Any, pixels: torch.Tensor, names: list[str], generator: torch.Generator
) -> torch.Tensor:
    """Sample latents with a generator of their own, so caching (or reading a disk
    cache) never shifts the random stream that draws the training noise."""
    device = next(vae.parameters()).device
    latents = vae.encode(pixels.to(device, torch.float32)).latent_dist.sample(generator)
    latents = latents * vae.config.scaling_factor
    finite = torch.isfinite(latents).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = names[int((~finite).nonzero()[0])]
        raise NonFiniteLatentError(
            f"the VAE produced NaN/inf latents for {bad}: the VAE weights are broken or it ran "
            "in half precision; use a fixed VAE (vae) or keep sdxl_no_half_vae on"
        )
    return latents.cpu()


def _disk_path(image: TrainingImage, fingerprint: str) -> Path:
    w, h = image.bucket
    path = image.record.path
    return path.with_name(f"{path.stem}_{w:04d}x{h:04d}_sdxl_{fingerprint}.safetensors")


def cache_latents(
    vae: Any,
    images: list[TrainingImage],
    to_disk: bool,
    generator: torch.Generator,
    progress: Callable[[int, int], None] | None = None,
) -> list[torch.Tensor]:
    """One latent per image (4, h/8, w/8); read from / written to disk when asked."""
    fingerprint = vae_fingerprint(vae) if to_disk else ""
    cached: list[torch.Tensor] = []
    for index, image in enumerate(images):
        disk = _disk_path(image, fingerprint) if to_disk else None
        if disk is not None and disk.is_file():
            cached.append(load_file(str(disk))["latents"])
            continue
        name = f"{image.record.folder}/{image.record.path.name}"
        latent = encode(vae, pixels_for(image).unsqueeze(0), [name], generator)[0]
        if disk is not None:
            with atomic_path(disk) as tmp:
                save_file({"latents": latent.contiguous()}, str(tmp))
        cached.append(latent)
        if progress:
            progress(index + 1, len(images))
    return cached
