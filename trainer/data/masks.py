"""``masked_loss``: each sample's alpha channel as its loss mask.

As sd-scripts with ``alpha_mask`` (``library/train_util.py: load_image(path, alpha=True)``,
``BaseDataset.__getitem__``): the image is read as RGBA, its alpha (0-255 → 0-1) is resized
and cropped exactly as its pixels are, mirrored with them, and
``library/custom_train_functions.py: apply_masked_loss`` (``trainer.loss.apply_mask``)
area-averages it to the latent size. An image without alpha has a mask of ones.

The mask of an image with alpha is read from its file each time the image is drawn, also
when its latents are cached (sd-scripts keeps it in memory beside the cached latent); the
scan notes from each file's header whether it has alpha at all
(``trainer.data.folders.image_header``), so images without it cost nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from trainer.data.augment import Augmentation
from trainer.data.batches import TrainingImage
from trainer.data.images import resize_and_crop
from trainer.errors import InvalidDatasetError


def alpha_mask(image: TrainingImage, augmentation: Augmentation) -> torch.Tensor:
    """The (H, W) mask in [0, 1] of one sample, at its bucket size."""
    width, height = image.bucket
    if not image.record.has_alpha:
        return torch.ones(height, width)
    path = image.record.path
    try:
        with Image.open(path) as file:
            alpha = file.convert("RGBA").getchannel("A")
    except (OSError, Image.DecompressionBombError) as exc:
        raise InvalidDatasetError(
            f"image {path.parent.name}/{path.name} cannot be read: {exc}"
        ) from exc
    alpha = resize_and_crop(alpha, image.resized, image.bucket, augmentation.crop_left_top)
    mask = np.asarray(alpha, dtype=np.float32) / 255.0
    if augmentation.flipped:
        mask = mask[:, ::-1]
    return torch.from_numpy(mask.copy())


def batch_masks(
    images: list[TrainingImage], augmentations: list[Augmentation]
) -> torch.Tensor | None:
    """(B, 1, H, W) masks of a batch; None when no image in it has alpha (every mask would be
    ones, and multiplying by one changes nothing)."""
    if not any(image.record.has_alpha for image in images):
        return None
    masks = [alpha_mask(im, aug) for im, aug in zip(images, augmentations, strict=True)]
    return torch.stack(masks).unsqueeze(1)
