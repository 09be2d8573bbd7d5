"""Aspect-ratio bucketing and SDXL crop conditioning, computed exactly as sd-scripts does.

Pure integer/float arithmetic, no torch, no images: the planner, the dataset and
the tests share it. Sources: sd-scripts ``library/model_util.py::
make_bucket_resolutions`` and ``library/train_util.py::BucketManager``
(``select_bucket``, ``round_to_steps``, ``get_crop_ltrb``).

Sizes are ``(width, height)`` throughout, as in sd-scripts.

``ar_error`` is sd-scripts' signed value ``bucket_w / bucket_h - image_w / image_h``
(its "mean ar error" is the mean of the absolute values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

Size = tuple[int, int]


class ImageSizeError(ValueError):
    """An image that can't be given a bucket (wrong size without bucketing, too small)."""


@dataclass(frozen=True)
class BucketAssignment:
    """Where one image trains: resize to ``resized``, then crop the excess to ``bucket``."""

    bucket: Size
    resized: Size
    ar_error: float


class CropTopLeft(NamedTuple):
    """SDXL's ``crop_coords_top_left`` conditioning, in the order the UNet takes it."""

    top: int
    left: int


def predefined_buckets(resolution: Size, min_reso: int, max_reso: int, step: int) -> list[Size]:
    """The sorted bucket list of ``bucket_no_upscale: false`` (``make_bucket_resolutions``).

    The square bucket ⌊√A/step⌋·step is always present (A = W×H of ``resolution``);
    then for each width from ``min_reso`` to ``max_reso`` in ``step``s the tallest
    height within the area (floored to ``step``, capped at ``max_reso``) is added
    with its transpose when it is at least ``min_reso``.
    """
    area = resolution[0] * resolution[1]
    side = int(math.sqrt(area) // step) * step
    buckets = {(side, side)}
    for width in range(min_reso, max_reso + 1, step):
        height = min(max_reso, int((area // width) // step) * step)
        if height >= min_reso:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


def assign_predefined(image_size: Size, buckets: list[Size]) -> BucketAssignment:
    """``bucket_no_upscale: false``: the predefined bucket nearest in aspect ratio.

    An image whose size is itself a bucket keeps it. Otherwise the bucket with the
    smallest |bucket ar − image ar| wins (the first on ties, as numpy's argmin).
    The image is scaled to *cover* the bucket (it may be upscaled): by height
    when it is wider than the bucket, else by width; sides rounded half up.
    """
    width, height = image_size
    ratio = width / height
    if image_size in buckets:
        bucket = image_size
    else:
        bucket = min(buckets, key=lambda b: abs(b[0] / b[1] - ratio))
    scale = bucket[1] / height if ratio > bucket[0] / bucket[1] else bucket[0] / width
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    return BucketAssignment(bucket, resized, bucket[0] / bucket[1] - ratio)


def assign_no_upscale(image_size: Size, max_area: int, step: int) -> BucketAssignment:
    """``bucket_no_upscale: true``: a bucket per image; min/max_bucket_reso do not apply.

    An image larger than ``max_area`` is shrunk to that area keeping its aspect
    ratio; of the two candidates (width rounded to ``step`` first, or height
    first) the one with the smaller aspect error is kept. Smaller images are not
    resized. The bucket is the resized size floored to multiples of ``step``.
    """
    width, height = image_size
    ratio = width / height
    if width * height > max_area:
        target_w = math.sqrt(max_area * ratio)
        target_h = max_area / target_w
        by_width = _round_to_steps(target_w, step)
        by_width_h = _round_to_steps(by_width / ratio, step)
        by_height = _round_to_steps(target_h, step)
        by_height_w = _round_to_steps(by_height * ratio, step)
        width_first = _aspect_error(by_width, by_width_h, ratio)
        if width_first < _aspect_error(by_height_w, by_height, ratio):
            resized = (by_width, int(by_width / ratio + 0.5))
        else:
            resized = (int(by_height * ratio + 0.5), by_height)
    else:
        resized = (width, height)
    bucket = (resized[0] - resized[0] % step, resized[1] - resized[1] % step)
    if min(bucket) == 0:
        raise ImageSizeError(
            f"image is {width}x{height}: a side shorter than bucket_reso_steps ({step}) after "
            "fitting the training area leaves an empty bucket; use a larger image"
        )
    return BucketAssignment(bucket, resized, bucket[0] / bucket[1] - ratio)


def assign_fixed(
    image_size: Size, resolution: Size, *, random_crop: bool = False
) -> BucketAssignment:
    """``enable_bucket: false``: every image must already be exactly ``resolution``.

    As sd-scripts, a larger image is accepted only with ``random_crop`` (it is
    cropped, never resized); a smaller one is always an error.
    """
    width, height = image_size
    res_w, res_h = resolution
    if width < res_w or height < res_h:
        raise ImageSizeError(
            f"image is {width}x{height}, smaller than the training resolution {res_w}x{res_h}; "
            "enable bucketing (enable_bucket) or resize the image"
        )
    if (width, height) != resolution and not random_crop:
        raise ImageSizeError(
            f"image is {width}x{height}, not the training resolution {res_w}x{res_h}; "
            "enable bucketing (enable_bucket) or resize the image"
        )
    return BucketAssignment(resolution, image_size, res_w / res_h - width / height)


def assign_bucket(
    image_size: Size,
    *,
    resolution: Size,
    min_reso: int,
    max_reso: int,
    step: int,
    no_upscale: bool,
    enable_bucket: bool = True,
    random_crop: bool = False,
) -> BucketAssignment:
    """The bucket of one image under the config's bucketing settings."""
    if image_size[0] <= 0 or image_size[1] <= 0:
        raise ImageSizeError(f"image has no pixels ({image_size[0]}x{image_size[1]})")
    if not enable_bucket:
        return assign_fixed(image_size, resolution, random_crop=random_crop)
    if no_upscale:
        return assign_no_upscale(image_size, resolution[0] * resolution[1], step)
    return assign_predefined(image_size, predefined_buckets(resolution, min_reso, max_reso, step))


def crop_ltrb(bucket: Size, original_size: Size) -> tuple[float, float, float, float]:
    """sd-scripts ``get_crop_ltrb``: where the image would sit if scaled to *fit* the bucket.

    Scale by the bucket height when the bucket is wider than the image, else by
    its width; the offsets centre the fitted image (floor division of floats).
    """
    bucket_w, bucket_h = bucket
    image_ratio = original_size[0] / original_size[1]
    if bucket_w / bucket_h > image_ratio:
        fit_w, fit_h = bucket_h * image_ratio, float(bucket_h)
    else:
        fit_w, fit_h = float(bucket_w), bucket_w / image_ratio
    left = (bucket_w - fit_w) // 2
    top = (bucket_h - fit_h) // 2
    return left, top, left + fit_w, top + fit_h


def crop_top_left(bucket: Size, original_size: Size, *, flipped: bool = False) -> CropTopLeft:
    """SDXL ``crop_coords_top_left`` (top, left) for an image trained in ``bucket``.

    sd-scripts derives it from :func:`crop_ltrb` — the same for centre and random
    crops — and mirrors it for a flipped sample: left = bucket width − right.
    """
    left, top, right, _ = crop_ltrb(bucket, original_size)
    if flipped:
        left = bucket[0] - right
    return CropTopLeft(int(top), int(left))


def _aspect_error(width: int, height: int, ratio: float) -> float:
    """How far a candidate's aspect is from the image's; a zero height (sd-scripts divides by
    it and crashes) is never the better candidate."""
    return abs(width / height - ratio) if height else math.inf


def _round_to_steps(value: float, step: int) -> int:
    """sd-scripts ``round_to_steps``: round half up, then floor to a multiple of ``step``."""
    rounded = int(value + 0.5)
    return rounded - rounded % step
