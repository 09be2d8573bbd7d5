"""Per-sample augmentation: ``flip_aug``, ``color_aug``, ``random_crop``.

sd-scripts (``BaseDataset.__getitem__``, ``trim_and_resize_if_required``,
``AugHelper.color_aug``) decides these each time a sample is drawn: crop the
resized image into its bucket (centred, or at a uniformly random offset), jitter
its colours, mirror it. Here each draw is made once per sample, from the
session's own ``augment_rng``, before any pixel is read (:func:`draw_augmentation`);
the same :class:`Augmentation` then picks the pixels (or the cached latent) and the
SDXL crop conditioning. The random stream thus depends on neither image contents,
batching nor caching: a run is reproducible, and an exact resume only needs that
generator's state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from trainer.config import TrainingConfig
from trainer.data.batches import TrainingImage
from trainer.data.buckets import crop_top_left

# The augmentation stream is Random(seed + this): apart from the caption stream
# (Random(seed)) and the per-epoch batch order (Random(seed + epoch), epoch <= 10000).
AUGMENT_SEED_OFFSET = 1_000_003

COLOR_AUG_CHANCE = 0.33
HUE_SHIFT_LIMIT = 8.0  # OpenCV hue units: 180 make a full turn, so ±16°
GAMMA_RANGE = (0.95, 1.05)
_PIL_HUE_STEPS = 256  # PIL's 8-bit HSV splits a full turn into 256 steps


@dataclass(frozen=True)
class Augmentation:
    """What one sample draw does to its image."""

    flipped: bool = False
    crop_left_top: tuple[int, int] | None = None  # offset into the resized image; None: centred
    hue_shift: float = 0.0  # OpenCV hue units
    gamma: float = 1.0


PLAIN = Augmentation()


def augment_rng(seed: int) -> random.Random:
    return random.Random(seed + AUGMENT_SEED_OFFSET)


def draw_augmentation(
    image: TrainingImage, config: TrainingConfig, rng: random.Random
) -> Augmentation:
    """One sample's augmentation, drawn in sd-scripts' order: flip, crop, colour.

    A disabled key draws nothing, and a crop draws only on an axis with an excess
    (as sd-scripts), so a run without augmentation never touches the generator.
    """
    flipped = config.flip_aug and rng.random() < 0.5
    crop = random_crop_offset(image.resized, image.bucket, rng) if config.random_crop else None
    hue, gamma = draw_color(rng) if config.color_aug else (0.0, 1.0)
    return Augmentation(flipped, crop, hue, gamma)


def random_crop_offset(
    resized: tuple[int, int], bucket: tuple[int, int], rng: random.Random
) -> tuple[int, int]:
    """(left, top): ``randint(0, excess)`` on each axis that has an excess, width first."""
    left, top = (
        rng.randint(0, r - b) if r > b else 0 for r, b in zip(resized, bucket, strict=True)
    )
    return left, top


def draw_color(rng: random.Random) -> tuple[float, float]:
    """(hue shift, gamma) of ``AugHelper.color_aug``: 33% of samples change, half of
    those by a hue shift U(-8, 8) (OpenCV units), the other half by gamma U(0.95, 1.05)."""
    if rng.random() > COLOR_AUG_CHANCE:
        return 0.0, 1.0
    if rng.random() > 0.5:
        return rng.uniform(-HUE_SHIFT_LIMIT, HUE_SHIFT_LIMIT), 1.0
    return 0.0, rng.uniform(*GAMMA_RANGE)


def shift_hue(image: Image.Image, shift: float) -> Image.Image:
    """Rotate every pixel's hue by ``shift`` OpenCV units through PIL's 8-bit HSV.

    sd-scripts adds the shift to OpenCV's uint8 hue (180 steps a turn) and
    truncates; PIL has 256 steps a turn, so the shift is rescaled, then truncated
    the same way. (sd-scripts converts RGB pixels with ``COLOR_BGR2HSV``, which
    mirrors the hue circle and so the shift's sign; the shift is symmetric, so the
    distribution of results is the same.)
    """
    hue, saturation, value = image.convert("HSV").split()
    steps = shift * _PIL_HUE_STEPS / 180
    shifted = (np.asarray(hue, dtype=np.float64) + steps) % _PIL_HUE_STEPS
    hue = Image.fromarray(shifted.astype(np.uint8), "L")
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def apply_gamma(image: Image.Image, gamma: float) -> Image.Image:
    """sd-scripts' ``clip(pixel ** gamma, 0, 255)`` on the raw 0–255 values, truncated
    back to uint8 (not a normalised gamma: it mostly moves the bright end)."""
    array = np.clip(np.asarray(image, dtype=np.float64) ** gamma, 0, 255)
    return Image.fromarray(array.astype(np.uint8), "RGB")


def augment_pixels(image: Image.Image, augmentation: Augmentation) -> Image.Image:
    """Colour jitter, then the mirror (sd-scripts' order, after the crop)."""
    if augmentation.hue_shift:
        image = shift_hue(image, augmentation.hue_shift)
    if augmentation.gamma != 1.0:
        image = apply_gamma(image, augmentation.gamma)
    if augmentation.flipped:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def crop_conditioning(image: TrainingImage, augmentation: Augmentation) -> tuple[int, int]:
    """SDXL ``crop_coords_top_left`` (top, left) of one augmented sample.

    A centred crop keeps sd-scripts' value (``BucketManager.get_crop_ltrb``), mirrored
    for a flipped sample.
    A random crop conditions on the offset actually cut off the resized image, as
    SDXL was trained (sd-scripts keeps the centred value there, noting it had no
    better idea); flipped, the left offset is the excess on the other side.
    """
    if augmentation.crop_left_top is None:
        if not augmentation.flipped:
            return image.crop_top_left
        return crop_top_left(image.bucket, image.record.size, flipped=True)
    left, top = augmentation.crop_left_top
    if augmentation.flipped:
        left = image.resized[0] - image.bucket[0] - left
    return top, left
