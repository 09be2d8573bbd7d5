"""flip_aug, color_aug and random_crop: what each draw does to the batch and its conditioning."""

from __future__ import annotations

import colorsys
import dataclasses
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.factories import make_dataset, tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import PayloadError, parse_payload
from trainer.data.augment import (
    PLAIN,
    Augmentation,
    apply_gamma,
    augment_rng,
    draw_augmentation,
    draw_color,
    random_crop_offset,
    shift_hue,
)
from trainer.data.batches import Batch
from trainer.data.folders import scan_dataset
from trainer.data.latents import pixels_for
from trainer.hooks import null_reporter
from trainer.plan import plan_from_scan
from trainer.run import TrainingJob, build_session
from trainer.session import Session
from trainer.step import batch_augmentations, batch_conditioning, batch_latents

# 96x64 images in the one predefined 64x64 bucket: resized to cover it (96x64), then
# 32 columns must be cut off, so a crop has somewhere to go.
WIDE = {"bucket_no_upscale": False, "max_bucket_reso": 64}


def config(**overrides):
    return parse_payload(tiny_payload(**overrides)).config


def session(tiny_model: Path, data: Path, tmp_path: Path, **overrides) -> Session:
    c = config(max_train_steps=2, save_every_n_epochs=0, **WIDE, **overrides)
    scan = scan_dataset(data, c.caption_extension)
    job = TrainingJob(c, tiny_model, data, tmp_path)
    return build_session(job, scan, plan_from_scan(c, scan), null_reporter, seed=7)


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("wide"), {"1_wide": 2}, sizes=[(96, 64)])


@pytest.fixture(scope="module")
def augmenting(tiny_model, wide_data, tmp_path_factory) -> Session:
    """Every pixel augmentation on, so no latent cache."""
    flags = dict(flip_aug=True, color_aug=True, random_crop=True, cache_latents=False)
    return session(tiny_model, wide_data, tmp_path_factory.mktemp("out"), **flags)


def plain_crop(path: Path, left: int) -> Image.Image:
    """An independent crop of the 96x64 file: no resize needed, 64 columns from ``left``."""
    with Image.open(path) as image:
        return image.convert("RGB").crop((left, 0, left + 64, 64))


def as_pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def draws_until(s: Session, wanted, limit: int = 400) -> Augmentation:
    for _ in range(limit):
        augmentation = draw_augmentation(s.images[0], s.config, s.augment_rng)
        if wanted(augmentation):
            return augmentation
    raise AssertionError("no such draw")


def test_crop_offsets_are_uniform_over_the_excess_and_only_drawn_where_there_is_one():
    rng = random.Random(0)
    lefts = [random_crop_offset((96, 64), (64, 64), rng) for _ in range(3000)]
    assert {top for _, top in lefts} == {0}
    assert {left for left, _ in lefts} == set(range(33))  # randint(0, 32), both ends
    assert abs(np.mean([left for left, _ in lefts]) - 16) < 0.6
    before = rng.getstate()
    assert random_crop_offset((64, 64), (64, 64), rng) == (0, 0)
    assert rng.getstate() == before


def test_color_draws_follow_aughelper_proportions():
    rng = random.Random(1)
    draws = [draw_color(rng) for _ in range(30000)]
    hues = [h for h, g in draws if h]
    gammas = [g for h, g in draws if g != 1.0]
    assert abs((len(hues) + len(gammas)) / len(draws) - 0.33) < 0.01
    assert abs(len(hues) / (len(hues) + len(gammas)) - 0.5) < 0.02
    assert -8 <= min(hues) < -7.9 and 7.9 < max(hues) <= 8
    assert 0.95 <= min(gammas) < 0.951 and 1.049 < max(gammas) <= 1.05


def test_hue_shift_rotates_hue_like_colorsys_and_keeps_value():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    shifted = np.asarray(shift_hue(Image.fromarray(array, "RGB"), 5.0), dtype=np.float64)
    expected = np.array(
        [
            colorsys.hsv_to_rgb(((h + 10 / 360) % 1.0), s, v)  # 5 OpenCV units = 10°
            for h, s, v in (colorsys.rgb_to_hsv(*(p / 255)) for p in array.reshape(-1, 3))
        ]
    ).reshape(16, 16, 3)
    error = np.abs(shifted - expected * 255)
    assert error.mean() < 2.5 and error.max() <= 12  # 8-bit HSV quantises hue to 1.4°
    assert np.abs(shifted - array).mean() > 4 * error.mean()  # the shift itself is larger
    assert np.abs(shifted.max(axis=2) - array.max(axis=2)).max() <= 1  # HSV value kept


def test_gamma_raises_the_raw_values_and_clips_like_sd_scripts():
    image = Image.fromarray(np.array([[[100, 200, 10]]], dtype=np.uint8), "RGB")
    # 100^1.05 = 125.9, 200^1.05 = 260.6 (clipped), 10^1.05 = 11.2; then truncated
    assert np.asarray(apply_gamma(image, 1.05)).tolist() == [[[125, 255, 11]]]
    # 100^0.95 = 79.4, 200^0.95 = 153.4, 10^0.95 = 8.9
    assert np.asarray(apply_gamma(image, 0.95)).tolist() == [[[79, 153, 8]]]


def test_augmentation_stream_is_seeded_apart_and_resumes_from_its_state():
    c = config(flip_aug=True, color_aug=True, random_crop=True, cache_latents=False, **WIDE)
    image = SimpleNamespace(resized=(96, 64), bucket=(64, 64))
    first = [draw_augmentation(image, c, augment_rng(42)) for _ in range(3)]
    assert first == [draw_augmentation(image, c, augment_rng(42)) for _ in range(3)]
    rng = augment_rng(42)
    assert rng.getstate() != random.Random(42).getstate()  # not the caption stream
    head = [draw_augmentation(image, c, rng) for _ in range(5)]
    saved = rng.getstate()
    tail = [draw_augmentation(image, c, rng) for _ in range(20)]
    resumed = random.Random()
    resumed.setstate(saved)
    assert [draw_augmentation(image, c, resumed) for _ in range(20)] == tail
    assert len(set(head + tail)) > 10
    # The exact-resume code saves every random.Random field of the Session.
    field = {f.name: f for f in dataclasses.fields(Session)}["augment_rng"]
    assert field.type in ("random.Random", random.Random)


def test_without_the_keys_nothing_is_drawn():
    rng = random.Random(3)
    before = rng.getstate()
    image = SimpleNamespace(resized=(96, 64), bucket=(64, 64))
    assert draw_augmentation(image, config(**WIDE), rng) == PLAIN
    assert rng.getstate() == before


@pytest.mark.parametrize("key", ["color_aug", "random_crop"])
def test_pixel_augmentations_refuse_the_latent_cache(key):
    with pytest.raises(PayloadError) as caught:
        parse_payload(tiny_payload(**{key: True, "cache_latents": True}))
    (problem,) = caught.value.problems
    assert problem.field == key and "cache_latents" in problem.message
    assert getattr(config(**{key: True, "cache_latents": False}), key)


@shows_effect("random_crop")
def test_random_crop_cuts_the_bucket_at_the_drawn_offset_and_conditions_on_it(augmenting):
    s = augmenting
    record = s.images[0].record
    lefts = set()
    for _ in range(12):
        augmentation = draws_until(s, lambda a: not a.flipped and a.gamma == 1 and not a.hue_shift)
        (left, top) = augmentation.crop_left_top
        lefts.add(left)
        pixels = pixels_for(s.images[0], augmentation)
        assert torch.equal(pixels, as_pixels(plain_crop(record.path, left)))
        *_, time_ids = batch_conditioning(s, Batch((64, 64), (0,)), 1, [augmentation])
        assert time_ids[0].tolist() == [64, 96, top, left, 64, 64]
    assert len(lefts) >= 5
    # Centred, as without random_crop: the middle 64 columns and sd-scripts' fit offsets.
    assert torch.equal(pixels_for(s.images[0], PLAIN), as_pixels(plain_crop(record.path, 16)))
    *_, time_ids = batch_conditioning(s, Batch((64, 64), (0,)), 1, [PLAIN])
    assert time_ids[0].tolist() == [64, 96, 10, 0, 64, 64]


@shows_effect("flip_aug")
def test_flip_mirrors_the_crop_and_its_left_offset(augmenting):
    s = augmenting
    record = s.images[0].record
    flipped = draws_until(s, lambda a: a.flipped and a.gamma == 1 and not a.hue_shift)
    left, top = flipped.crop_left_top
    mirror = plain_crop(record.path, left).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert torch.equal(pixels_for(s.images[0], flipped), as_pixels(mirror))
    *_, time_ids = batch_conditioning(s, Batch((64, 64), (0,)), 1, [flipped])
    assert time_ids[0].tolist() == [64, 96, top, 32 - left, 64, 64]
    centred = Augmentation(flipped=True)  # a centred crop mirrors sd-scripts' fit offsets
    *_, time_ids = batch_conditioning(s, Batch((64, 64), (0,)), 1, [centred])
    assert time_ids[0].tolist() == [64, 96, 10, 0, 64, 64]  # the fit is centred horizontally
    draws = [batch_augmentations(s, Batch((64, 64), (0, 1))) for _ in range(200)]
    share = sum(a.flipped for pair in draws for a in pair) / 400
    assert 0.4 < share < 0.6


@shows_effect("color_aug")
def test_color_aug_changes_a_third_of_the_draws_pixels(augmenting):
    s = augmenting
    path = s.images[0].record.path
    draws = [draw_augmentation(s.images[0], s.config, s.augment_rng) for _ in range(1500)]
    assert 0.29 < sum(bool(a.hue_shift) or a.gamma != 1 for a in draws) / len(draws) < 0.37
    gamma = next(a for a in draws if a.gamma != 1 and not a.flipped)
    base = np.asarray(plain_crop(path, gamma.crop_left_top[0]), dtype=np.float64)
    expected = np.clip(base**gamma.gamma, 0, 255).astype(np.uint8)
    assert torch.equal(pixels_for(s.images[0], gamma), as_pixels(Image.fromarray(expected)))
    hue = next(a for a in draws if abs(a.hue_shift) > 4 and not a.flipped)
    base = np.asarray(plain_crop(path, hue.crop_left_top[0]), dtype=np.float64)
    shifted = (pixels_for(s.images[0], hue).permute(1, 2, 0).numpy() + 1) * 127.5
    assert np.abs(shifted - base).mean() > 1  # a real change ...
    assert np.abs(shifted.max(axis=2) - base.max(axis=2)).max() <= 1.01  # ... of hue only


@shows_effect("flip_aug")
def test_flip_with_the_latent_cache_picks_the_cached_mirror(tiny_model, wide_data, tmp_path):
    s = session(tiny_model, wide_data, tmp_path, flip_aug=True)
    assert s.augment_rng.getstate() == augment_rng(7).getstate()  # from the run seed
    assert s.latents is not None and s.flipped_latents is not None
    assert all(not torch.equal(a, b) for a, b in zip(s.latents, s.flipped_latents, strict=True))
    batch = Batch((64, 64), (0, 1))
    seen = set()
    for _ in range(20):
        augmentations = batch_augmentations(s, batch)
        latents = batch_latents(s, batch, augmentations)
        for row, (index, augmentation) in enumerate(zip(batch.images, augmentations, strict=True)):
            cache = s.flipped_latents if augmentation.flipped else s.latents
            assert torch.equal(latents[row], cache[index])
            seen.add(augmentation.flipped)
    assert seen == {True, False}
