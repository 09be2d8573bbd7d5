"""Aspect-ratio bucketing against sd-scripts' literal bucket list and hand-derived values."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from tests.factories import make_dataset, tiny_payload
from trainer.config import parse_payload
from trainer.data.batches import bucket_counts, bucket_images, epoch_batches
from trainer.data.buckets import (
    ImageSizeError,
    assign_bucket,
    assign_fixed,
    assign_no_upscale,
    crop_ltrb,
    crop_top_left,
    predefined_buckets,
)
from trainer.data.folders import scan_dataset
from trainer.errors import InvalidDatasetError
from trainer.plan import plan_training

# sd-scripts' library/model_util.py: make_bucket_resolutions gives these 41 buckets for 1024²,
# min 256, max 2048, step 64 (the first 21, then their transposes).
_HALF = [
    (256, 2048), (320, 2048), (384, 2048), (448, 2048), (512, 1856), (512, 1920), (512, 1984),
    (512, 2048), (576, 1664), (576, 1728), (576, 1792), (640, 1536), (640, 1600), (704, 1408),
    (704, 1472), (768, 1280), (768, 1344), (832, 1216), (896, 1152), (960, 1088), (1024, 1024),
]  # fmt: skip
REFERENCE_BUCKETS = sorted(set(_HALF) | {(h, w) for w, h in _HALF})

SEED = {"resolution": (1024, 1024), "min_reso": 256, "max_reso": 2048, "step": 64}


def test_predefined_buckets_for_the_seed_settings_equal_the_reference_list() -> None:
    buckets = predefined_buckets((1024, 1024), 256, 2048, 64)

    assert len(buckets) == 41
    assert buckets == REFERENCE_BUCKETS


def test_predefined_buckets_never_exceed_the_area_and_respect_the_limits() -> None:
    for w, h in predefined_buckets((768, 512), 128, 1024, 32):
        assert w * h <= 768 * 512
        assert min(w, h) >= 128 and max(w, h) <= 1024
        assert w % 32 == 0 and h % 32 == 0


def test_no_upscale_shrinks_a_large_image_to_the_area_and_floors_to_the_step() -> None:
    # 1500x1000, ar 1.5, area 1.5M > 1,048,576. Target width √(1048576·1.5) = 1254.1,
    # height 836.1. Width first: 1254 -> 1216, height round(1216/1.5 = 810.7) = 811 -> 768,
    # ar 1.583 (error 0.083). Height first: 836 -> 832, width round(1248) -> 1216,
    # ar 1.4615 (error 0.038) wins: resized (round(832·1.5), 832) = (1248, 832),
    # bucket floored to 64: (1216, 832).
    got = assign_bucket((1500, 1000), no_upscale=True, **SEED)

    assert got.resized == (1248, 832)
    assert got.bucket == (1216, 832)
    assert got.ar_error == pytest.approx(1216 / 832 - 1.5)


def test_no_upscale_can_prefer_the_width_rounded_candidate() -> None:
    # 3000x1000, ar 3. Target width √(1048576·3) = 1773.6, height 591.2.
    # Width first: 1774 -> 1728, height round(576) = 576 -> 576, ar 3.0 (error 0).
    # Height first: 591 -> 576, width round(1728) -> 1728, ar 3.0 (error 0): not smaller,
    # so the height candidate is used: resized (round(576·3), 576) = (1728, 576).
    got = assign_bucket((3000, 1000), no_upscale=True, **SEED)
    assert (got.resized, got.bucket, got.ar_error) == ((1728, 576), (1728, 576), 0.0)

    # 1000x3000 portrait, ar 1/3: width first 591.2 -> 591 -> 576, height round(1728) -> 1728
    # ar error 0; height first 1773.6 -> 1774 -> 1728, width round(576) -> 576, error 0;
    # height candidate again: resized (int(1728/3 + 0.5), 1728) = (576, 1728).
    portrait = assign_bucket((1000, 3000), no_upscale=True, **SEED)
    assert (portrait.resized, portrait.bucket) == ((576, 1728), (576, 1728))


def test_no_upscale_keeps_small_images_at_native_size_floored_to_the_step() -> None:
    got = assign_bucket((700, 500), no_upscale=True, **SEED)

    assert got.resized == (700, 500)  # never upscaled
    assert got.bucket == (640, 448)  # 700 - 700 % 64, 500 - 500 % 64
    assert got.ar_error == pytest.approx(640 / 448 - 700 / 500)


def test_no_upscale_ignores_min_and_max_bucket_reso() -> None:
    got = assign_bucket((200, 130), no_upscale=True, **SEED)
    assert got.bucket == (192, 128)  # below min_bucket_reso 256, as sd-scripts


def test_predefined_mode_picks_the_nearest_aspect_ratio_and_covers_it() -> None:
    # 1500x1000, ar 1.5. Nearest bucket ar: 1216/832 = 1.4615 (|Δ| 0.0385) vs
    # 1280/768 = 1.667, 1152/896 = 1.286. Image is wider than the bucket, so scale by
    # height: 832/1000 -> (round(1248.0), 832) = (1248, 832).
    got = assign_bucket((1500, 1000), no_upscale=False, **SEED)

    assert got.bucket == (1216, 832)
    assert got.resized == (1248, 832)
    assert got.ar_error == pytest.approx(1216 / 832 - 1.5)


def test_predefined_mode_upscales_small_images_and_keeps_exact_buckets() -> None:
    # 500x500 -> square bucket 1024, scale 1024/500 (ar equal, so scale by width).
    small = assign_bucket((500, 500), no_upscale=False, **SEED)
    assert (small.bucket, small.resized, small.ar_error) == ((1024, 1024), (1024, 1024), 0.0)

    exact = assign_bucket((832, 1216), no_upscale=False, **SEED)
    assert (exact.bucket, exact.resized) == ((832, 1216), (832, 1216))

    # 600x1000, ar 0.6, equals the 768x1280 bucket exactly (not equal-or-wider, so scale by
    # width 768/600): (768, 1280), no error.
    same_ratio = assign_bucket((600, 1000), no_upscale=False, **SEED)
    assert (same_ratio.bucket, same_ratio.resized, same_ratio.ar_error) == (
        (768, 1280),
        (768, 1280),
        0.0,
    )
    # 700x1000, ar 0.7: 832/1216 = 0.684 (|Δ| 0.016) beats 896/1152 = 0.778 and
    # 768/1280 = 0.6. The image is wider, so scale by height 1216/1000:
    # (int(700·1.216 + 0.5), 1216) = (851, 1216).
    tall = assign_bucket((700, 1000), no_upscale=False, **SEED)
    assert (tall.bucket, tall.resized) == ((832, 1216), (851, 1216))
    assert tall.ar_error == pytest.approx(832 / 1216 - 0.7)


def test_crop_offsets_follow_get_crop_ltrb() -> None:
    # Bucket 1216x832 (ar 1.4615) is narrower than the 1.5 image: fit by width,
    # height 1216/1.5 = 810.67, top = (832 - 810.67) // 2 = 10, left 0.
    assert crop_top_left((1216, 832), (1500, 1000)) == (10, 0)
    # Bucket wider than the image: fit by height. 1024x1024 with a 600x1000 image:
    # width 1024·0.6 = 614.4, left = (1024 - 614.4) // 2 = 204.
    left, top, right, bottom = crop_ltrb((1024, 1024), (600, 1000))
    assert (left, top) == (204.0, 0.0)
    assert right == pytest.approx(204 + 614.4) and bottom == 1024
    assert crop_top_left((1024, 1024), (600, 1000)) == (0, 204)
    # Flipped: left = bucket width - right = 1024 - 818.4 = 205.6 -> 205.
    assert crop_top_left((1024, 1024), (600, 1000), flipped=True) == (0, math.floor(205.6))


def test_disabled_bucketing_requires_the_exact_resolution() -> None:
    ok = assign_bucket((1024, 1024), enable_bucket=False, no_upscale=True, **SEED)
    assert (ok.bucket, ok.resized, ok.ar_error) == ((1024, 1024), (1024, 1024), 0.0)

    with pytest.raises(ImageSizeError, match="smaller than the training resolution"):
        assign_bucket((1000, 1024), enable_bucket=False, no_upscale=True, **SEED)
    with pytest.raises(ImageSizeError, match="not the training resolution"):
        assign_bucket((1200, 1024), enable_bucket=False, no_upscale=True, **SEED)


def test_disabled_bucketing_accepts_larger_images_with_random_crop() -> None:
    got = assign_fixed((1200, 1100), (1024, 1024), random_crop=True)
    assert got.bucket == (1024, 1024) and got.resized == (1200, 1100)


def test_a_side_that_rounds_to_zero_is_a_clear_error_not_a_division_by_zero():
    # sd-scripts raises ZeroDivisionError here: 96x64 into a 64x64 area with 64-pixel steps.
    with pytest.raises(ImageSizeError, match="shorter than bucket_reso_steps"):
        assign_no_upscale((96, 64), 64 * 64, 64)
    # One zero-height candidate no longer wins or crashes: the other one is taken.
    assert assign_no_upscale((96, 200), 128 * 128, 64).bucket == (64, 128)


def test_an_image_too_small_for_one_bucket_step_is_a_dataset_error_naming_it(tmp_path):
    data = make_dataset(tmp_path / "data", {"1_small": 1}, sizes=[(40, 40)])
    config = parse_payload(tiny_payload(bucket_reso_steps=64)).config
    with pytest.raises(InvalidDatasetError, match=r"1_small/img000.png: image is 40x40"):
        plan_training(config, data)


def test_bucket_counts_equal_the_images_each_epoch_trains_per_bucket(tmp_path):
    data = make_dataset(
        tmp_path / "data", {"3_wide": 2, "5_tall": 3, "1_square": 2},
        sizes=[(128, 64), (64, 128), (64, 64)],
    )  # fmt: skip
    config = parse_payload(tiny_payload(max_resolution="128,128", bucket_reso_steps=64)).config
    images = bucket_images(scan_dataset(data, ".txt").images, config)
    trained: Counter[tuple[int, int]] = Counter()
    for batch in epoch_batches(images, batch_size=2, seed=1, epoch=1):
        trained[batch.bucket] += len(batch.images)
    assert bucket_counts(images) == dict(sorted(trained.items()))
    assert sum(bucket_counts(images).values()) == 2 * 3 + 3 * 5 + 2 * 1
