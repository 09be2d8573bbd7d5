"""Encode images to SDXL latents, optionally once up front (``cache_latents``).

The SDXL VAE overflows to NaN in fp16, so it always runs in fp32 here; a
non-finite latent stops the run with the image's name rather than poisoning
training silently.

Caching encodes the images of one bucket ``vae_batch_size`` at a time (as
sd-scripts ``cache_latents``) and, with ``flip_aug``, also each image's mirror.
Every latent draws its own sampling noise, so the batch size changes how many
VAE calls there are, never which noise an image gets. With ``masked_loss`` each image's
alpha is kept beside its latent (``trainer.data.masks``), on disk too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainer.data.augment import PLAIN, Augmentation, augment_pixels
from trainer.data.batches import TrainingImage
from trainer.data.images import load_rgb, resize_and_crop, to_tensor
from trainer.data.masks import alpha_values
from trainer.errors import NonFiniteLatentError
from trainer.storage import atomic_path


def pixels_for(image: TrainingImage, augmentation: Augmentation = PLAIN) -> torch.Tensor:
    rgb = resize_and_crop(
        load_rgb(image.record.path), image.resized, image.bucket, augmentation.crop_left_top
    )
    return to_tensor(augment_pixels(rgb, augmentation))


def latent_shape(vae: Any, bucket: tuple[int, int]) -> tuple[int, int, int]:
    """(channels, h, w) of one image's latent (scale factor as diffusers' pipelines compute it)."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return (vae.config.latent_channels, bucket[1] // factor, bucket[0] // factor)


def draw_noise(
    vae: Any, buckets: list[tuple[int, int]], generator: torch.Generator
) -> torch.Tensor:
    """The VAE sampling noise of a batch, one image after the other (fp32, CPU)."""
    return torch.stack([torch.randn(latent_shape(vae, b), generator=generator) for b in buckets])


def vae_fingerprint(vae: Any) -> str:
    """Identifies the VAE weights, so a disk cache from another model is not reused."""
    first = next(iter(vae.state_dict().values()))
    return hashlib.sha256(first.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


@torch.no_grad()
def encode(vae: Any, pixels: torch.Tensor, names: list[str], noise: torch.Tensor) -> torch.Tensor:
    """Sample latents ``mean + std * noise``, as ``latent_dist.sample`` does, with noise
    drawn by the caller from a generator of its own (the latent generator), so caching
    (or reading a disk cache) never shifts the stream that draws the training noise."""
    device = next(vae.parameters()).device
    dist = vae.encode(pixels.to(device, torch.float32)).latent_dist
    latents = dist.mean + dist.std * noise.to(device, dist.mean.dtype)
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


@dataclass(frozen=True)
class LatentCache:
    """One latent per image (4, h/8, w/8) and, with ``flip_aug``, one of its mirror; with
    masks, each image's (H, W) uint8 alpha (None: the image has none)."""

    latents: list[torch.Tensor]
    flipped: list[torch.Tensor] | None
    alphas: list[torch.Tensor | None] | None = None


Cached = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # latent, mirror, alpha


def _name(image: TrainingImage) -> str:
    return f"{image.record.folder}/{image.record.path.name}"


def _read_disk(path: Path, flip: bool, alpha: bool) -> Cached | None:
    """``alpha``: the image's alpha is wanted (masked_loss on an image with alpha)."""
    if not path.is_file():
        return None
    tensors = load_file(str(path))
    if (flip and "latents_flipped" not in tensors) or (alpha and "alpha_mask" not in tensors):
        return None  # cached before flip_aug / masked_loss was on: encode again (as sd-scripts)
    return (
        tensors["latents"],
        tensors["latents_flipped"] if flip else None,
        tensors["alpha_mask"] if alpha else None,
    )


def _write_disk(path: Path, cached: Cached) -> None:
    latent, flipped, alpha = cached
    tensors = {"latents": latent.contiguous()}
    if flipped is not None:
        tensors["latents_flipped"] = flipped.contiguous()
    if alpha is not None:
        tensors["alpha_mask"] = alpha.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def bucket_batches(
    indices: list[int], images: list[TrainingImage], batch_size: int
) -> Iterator[list[int]]:
    """``indices`` grouped by bucket (in order of first appearance), cut into batches."""
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for index in indices:
        by_bucket.setdefault(images[index].bucket, []).append(index)
    for members in by_bucket.values():
        for start in range(0, len(members), batch_size):
            yield members[start : start + batch_size]


def _seeded_noise(vae: Any, bucket: tuple[int, int], seeds: list[int]) -> torch.Tensor:
    shape = latent_shape(vae, bucket)
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    )


def _encode_batch(
    vae: Any, images: list[TrainingImage], seeds: list[list[int]], flip: bool
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    names = [_name(image) for image in images]
    pixels = torch.stack([pixels_for(image) for image in images])
    bucket = images[0].bucket
    plain = encode(vae, pixels, names, _seeded_noise(vae, bucket, [s[0] for s in seeds]))
    if not flip:
        return [(latent, None) for latent in plain]
    # sd-scripts mirrors the batch's pixels and encodes them again (own noise).
    noise = _seeded_noise(vae, bucket, [s[1] for s in seeds])
    return list(zip(plain, encode(vae, pixels.flip(-1), names, noise), strict=True))


def cache_latents(
    vae: Any,
    images: list[TrainingImage],
    to_disk: bool,
    generator: torch.Generator,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch_size: int = 1,
    flip: bool = False,
    masks: bool = False,
) -> LatentCache:
    """Every image's latent (and mirrored latent with ``flip``), ``batch_size`` images
    of one bucket per VAE call; read from / written to disk when asked. With ``masks``
    (masked_loss) each image's alpha is kept too.

    ``progress(done, total)`` runs after each VAE batch; it may raise to stop caching
    there (the trainer's stop signal does): each disk cache file is written atomically,
    so the ones already written stay valid for the next run."""
    fingerprint = vae_fingerprint(vae) if to_disk else ""
    wants_alpha = [masks and image.record.has_alpha for image in images]
    found: dict[int, Cached] = {}
    for index, image in enumerate(images if to_disk else ()):
        hit = _read_disk(_disk_path(image, fingerprint), flip, wants_alpha[index])
        if hit is not None:
            found[index] = hit
    todo = [index for index in range(len(images)) if index not in found]
    # Two seeds per image to encode, drawn in image order: each latent's noise is
    # then the same however the images are grouped into VAE batches.
    drawn = torch.randint(0, 2**62, (len(todo), 2), generator=generator).tolist()
    seeds = dict(zip(todo, drawn, strict=True))
    for batch in bucket_batches(todo, images, batch_size):
        encoded = _encode_batch(vae, [images[i] for i in batch], [seeds[i] for i in batch], flip)
        for index, (latent, mirrored) in zip(batch, encoded, strict=True):
            # the crop of a cached latent is the centred one (pixels_for, PLAIN)
            alpha = alpha_values(images[index]) if wants_alpha[index] else None
            found[index] = (latent, mirrored, alpha)
            if to_disk:
                _write_disk(_disk_path(images[index], fingerprint), found[index])
        if progress:
            progress(len(found), len(images))
    kept = [found[index] for index in range(len(images))]
    flipped = [mirrored for _, mirrored, _ in kept if mirrored is not None] if flip else None
    alphas = [alpha for _, _, alpha in kept] if masks else None
    return LatentCache([latent for latent, _, _ in kept], flipped, alphas)
