"""``masked_loss``: each sample's alpha channel as its loss mask.

As sd-scripts with ``alpha_mask`` (``library/train_util.py: load_image(path, alpha=True)``,
``BaseDataset.__getitem__``): the image is read as RGBA, its alpha (0-255 → 0-1) is resized
and cropped exactly as its pixels are, mirrored with them, and
``library/custom_train_functions.py: apply_masked_loss`` (``trainer.loss.apply_mask``)
area-averages it to the latent size. An image without alpha has a mask of ones.

The mask of an image with alpha is read from its file each time the image is drawn; with
``cache_latents`` it is read once while caching and kept beside the latent (8-bit, at the
bucket size, unmirrored: the cached latent's crop is always the centred one), as sd-scripts
keeps ``alpha_mask`` beside a cached latent (``library/train_util.py:
cache_batch_latents``), so a cached draw opens no image. The scan notes from each file's
header whether it has alpha at all (``trainer.data.folders.image_header``), so images
without it cost nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from trainer.data.augment import Augmentation
from trainer.data.batches import TrainingImage
from trainer.data.images import resize_and_crop
from trainer.errors import InvalidDatasetError


def alpha_values(
    image: TrainingImage, crop_left_top: tuple[int, int] | None = None
) -> torch.Tensor:
    """The (H, W) uint8 alpha of an image with alpha, resized and cropped into its bucket."""
    path = image.record.path
    try:
        with Image.open(path) as file:
            alpha = file.convert("RGBA").getchannel("A")
    except (OSError, Image.DecompressionBombError) as exc:
        raise InvalidDatasetError(
            f"image {path.parent.name}/{path.name} cannot be read: {exc}"
        ) from exc
    alpha = resize_and_crop(alpha, image.resized, image.bucket, crop_left_top)
    return torch.from_numpy(np.array(alpha, dtype=np.uint8))


def alpha_mask(
    image: TrainingImage, augmentation: Augmentation, cached: torch.Tensor | None = None
) -> torch.Tensor:
    """The (H, W) mask in [0, 1] of one sample, at its bucket size; ``cached``: its
    ``alpha_values`` kept at caching time (centred crop), read instead of the file."""
    width, height = image.bucket
    if not image.record.has_alpha:
        return torch.ones(height, width)
    alpha = cached if cached is not None else alpha_values(image, augmentation.crop_left_top)
    mask = alpha.to(torch.float32) / 255.0
    return mask.flip(-1) if augmentation.flipped else mask


def batch_masks(
    images: list[TrainingImage],
    augmentations: list[Augmentation],
    cached: list[torch.Tensor | None] | None = None,
) -> torch.Tensor | None:
    """(B, 1, H, W) masks of a batch; None when no image in it has alpha (every mask would be
    ones, and multiplying by one changes nothing). ``cached``: each image's kept alpha."""
    if not any(image.record.has_alpha for image in images):
        return None
    kept = cached or [None] * len(images)
    masks = [alpha_mask(*sample) for sample in zip(images, augmentations, kept, strict=True)]
    return torch.stack(masks).unsqueeze(1)
