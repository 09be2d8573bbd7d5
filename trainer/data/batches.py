"""Bucketed batches and their order per epoch (sd-scripts ``library/train_util.py``:
``BaseDataset.make_buckets`` / ``shuffle_buckets``). Torch-free: the planner uses it too.

Each image is repeated ``repeats`` times inside its bucket; every bucket's list
is cut into batches of ``train_batch_size`` (the last may be short), so a batch
never mixes resolutions. At each epoch the images inside buckets and the list
of batches are shuffled with ``seed + epoch``.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

from trainer.config import TrainingConfig
from trainer.data.buckets import ImageSizeError, assign_bucket, crop_top_left
from trainer.data.folders import ImageRecord
from trainer.errors import InvalidDatasetError


@dataclass(frozen=True)
class TrainingImage:
    record: ImageRecord
    bucket: tuple[int, int]  # (width, height) the image trains at
    resized: tuple[int, int]  # size before the (centred or random) crop into the bucket
    crop_top_left: tuple[int, int]  # (top, left) for SDXL's size conditioning


@dataclass(frozen=True)
class Batch:
    bucket: tuple[int, int]
    images: tuple[int, ...]  # indices into the image list


def bucket_images(records: tuple[ImageRecord, ...], config: TrainingConfig) -> list[TrainingImage]:
    images = []
    for record in records:
        try:
            assignment = assign_bucket(
                record.size,
                resolution=config.resolution,
                min_reso=config.min_bucket_reso,
                max_reso=config.max_bucket_reso,
                step=config.bucket_reso_steps,
                no_upscale=config.bucket_no_upscale,
                enable_bucket=config.enable_bucket,
                random_crop=config.random_crop,
            )
        except ImageSizeError as exc:
            raise InvalidDatasetError(f"image {record.folder}/{record.path.name}: {exc}") from exc
        top_left = crop_top_left(assignment.bucket, record.size)
        images.append(TrainingImage(record, assignment.bucket, assignment.resized, top_left))
    return images


def _bucket_members(images: list[TrainingImage]) -> dict[tuple[int, int], list[int]]:
    members: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        members[image.bucket].extend([index] * image.record.repeats)
    return dict(sorted(members.items()))


def bucket_counts(images: list[TrainingImage]) -> dict[tuple[int, int], int]:
    """Images x repeats per bucket: counted, not listed (the API plans every submitted job, and
    10,000 images at 10,000 repeats would be a list of 10^8 entries)."""
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for image in images:
        counts[image.bucket] += image.record.repeats
    return dict(sorted(counts.items()))


def batches_per_epoch(images: list[TrainingImage], batch_size: int) -> int:
    return sum(math.ceil(count / batch_size) for count in bucket_counts(images).values())


def epoch_batches(
    images: list[TrainingImage], batch_size: int, seed: int, epoch: int
) -> list[Batch]:
    """The batches of one (1-based) epoch, in training order."""
    rng = random.Random(seed + epoch)
    batches = []
    for bucket, members in _bucket_members(images).items():
        members = list(members)
        rng.shuffle(members)
        for start in range(0, len(members), batch_size):
            batches.append(Batch(bucket, tuple(members[start : start + batch_size])))
    rng.shuffle(batches)
    return batches
