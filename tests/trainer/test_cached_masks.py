"""``masked_loss`` with ``cache_latents``: the alpha is kept beside the cached latent.

sd-scripts keeps ``alpha_mask`` with a cached latent (``library/train_util.py:
cache_batch_latents``; on disk, beside the latents in the cache file), so a cached draw
reads no image. The kept mask must be the one read from the file
(``load_image(path, alpha=True)``: alpha / 255, cropped and mirrored with the pixels).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.factories import tiny_payload
from tests.trainer.test_latent_cache import PoolVae
from trainer.config import parse_payload
from trainer.data.augment import PLAIN, Augmentation
from trainer.data.batches import Batch, bucket_images
from trainer.data.folders import scan_dataset
from trainer.data.latents import cache_latents
from trainer.data.masks import alpha_mask, batch_masks
from trainer.hooks import null_reporter
from trainer.models.loading import training_noise_scheduler
from trainer.run import cache_image_latents
from trainer.step import prediction_loss


def config(**overrides):
    return parse_payload(
        tiny_payload(masked_loss=True, cache_latents=True, bucket_reso_steps=32, **overrides)
    ).config


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A 96x64 RGBA image with a graded alpha (resized and cropped into its bucket) and an
    RGB image (no alpha: a mask of ones)."""
    folder = tmp_path / "1_x"
    folder.mkdir()
    alpha = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1))
    rgba = np.dstack([np.full((64, 96, 3), 100, np.uint8), alpha])
    Image.fromarray(rgba, "RGBA").save(folder / "a.png")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(folder / "b.png")
    return tmp_path


@pytest.fixture
def opens(monkeypatch) -> list[str]:
    """Every PIL.Image.open from here on (the data modules all open images through it)."""
    seen: list[str] = []
    real = Image.open

    def counted(fp, *args, **kwargs):
        seen.append(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counted)
    return seen


def images_of(data: Path, **overrides):
    c = config(**overrides)
    return bucket_images(scan_dataset(data, c.caption_extension).images, c), c


def test_cached_masks_equal_the_files_and_are_drawn_without_opening_an_image(dataset, opens):
    images, c = images_of(dataset, flip_aug=True)
    flips = (PLAIN, Augmentation(flipped=True))
    from_file = [[alpha_mask(im, aug) for aug in flips] for im in images]
    cache = cache_image_latents(SimpleNamespace(vae=PoolVae()), images, c, torch.Generator(),
                                null_reporter)  # fmt: skip
    assert cache is not None and cache.alphas is not None
    with_alpha = [i for i, im in enumerate(images) if im.record.has_alpha]
    assert [a is not None for a in cache.alphas] == [i in with_alpha for i in range(len(images))]
    opens.clear()
    for index, image in enumerate(images):
        for aug, expected in zip(flips, from_file[index], strict=True):
            assert torch.equal(alpha_mask(image, aug, cache.alphas[index]), expected)
    index = with_alpha[0]
    kept = batch_masks([images[index]], [flips[1]], [cache.alphas[index]])
    assert kept is not None and torch.equal(kept[0, 0], from_file[index][1])
    assert opens == []
    # graded alpha: the mask is not all ones, so the comparison means something
    assert float(from_file[with_alpha[0]][0].min()) < 0.5


def test_the_step_reads_the_kept_mask(dataset, opens):
    images, c = images_of(dataset)
    cache = cache_latents(PoolVae(), images, False, torch.Generator(), masks=True)
    index = next(i for i, im in enumerate(images) if im.record.has_alpha)
    alphas = training_noise_scheduler().alphas_cumprod
    session = SimpleNamespace(
        config=c, images=images, cached_alphas=cache.alphas,
        model=SimpleNamespace(noise_scheduler=SimpleNamespace(alphas_cumprod=alphas)),
    )  # fmt: skip
    w, h = images[index].bucket
    prediction, target = torch.ones(1, 4, h // 8, w // 8), torch.zeros(1, 4, h // 8, w // 8)
    batch = Batch(images[index].bucket, (index,))
    opens.clear()
    kept = prediction_loss(session, batch, prediction, target, torch.tensor([10]), [PLAIN])  # type: ignore[arg-type]
    assert opens == []
    session.cached_alphas = None  # uncached: the mask comes from the file
    read = prediction_loss(session, batch, prediction, target, torch.tensor([10]), [PLAIN])  # type: ignore[arg-type]
    assert len(opens) == 1 and torch.equal(kept, read)
    assert float(read[0]) < 0.9  # the mask weighs the loss down


def test_the_disk_cache_keeps_the_alpha_too(dataset, opens):
    images, _ = images_of(dataset, cache_latents_to_disk=True)
    cache_latents(PoolVae(), images, True, torch.Generator())  # written before masked_loss
    files = sorted(dataset.glob("1_x/*.safetensors"))
    assert len(files) == 2 and not any("alpha_mask" in load_file(str(f)) for f in files)
    first = cache_latents(PoolVae(), images, True, torch.Generator(), masks=True)
    assert any("alpha_mask" in load_file(str(f)) for f in files)  # encoded again, with it
    opens.clear()
    vae = PoolVae()
    second = cache_latents(vae, images, True, torch.Generator(), masks=True)
    assert vae.calls == [] and opens == []  # all from disk, alpha included
    assert first.alphas is not None and second.alphas is not None
    for a, b in zip(first.alphas, second.alphas, strict=True):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
