"""Decode, resize and crop an image into its bucket (sd-scripts ``trim_and_resize_if_required``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainer.errors import InvalidDatasetError


def load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise InvalidDatasetError(
            f"image {path.parent.name}/{path.name} cannot be read: {exc}"
        ) from exc


def resize_and_crop(
    image: Image.Image,
    resized: tuple[int, int],
    bucket: tuple[int, int],
    left_top: tuple[int, int] | None = None,
) -> Image.Image:
    """Resize to ``resized`` then crop the excess to ``bucket``: at ``left_top``
    (``random_crop``) or centred.

    Downscaling uses PIL's BOX filter (an area average, like OpenCV's
    INTER_AREA that sd-scripts uses); upscaling uses LANCZOS (as SS-main).
    """
    if image.size != resized:
        shrinking = resized[0] * resized[1] < image.size[0] * image.size[1]
        image = image.resize(
            resized, Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS
        )
    if left_top is None:
        left_top = ((resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2)
    left, top = left_top
    if (left, top) != (0, 0) or resized != bucket:
        image = image.crop((left, top, left + bucket[0], top + bucket[1]))
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
