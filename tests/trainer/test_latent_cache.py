"""Latent caching: vae_batch_size batches one bucket's images; flip_aug caches mirrors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.factories import make_dataset, tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.data.batches import bucket_images
from trainer.data.folders import scan_dataset
from trainer.data.latents import cache_latents, pixels_for
from trainer.hooks import null_reporter
from trainer.models.loading import load_sdxl
from trainer.run import cache_image_latents


def config(**overrides):
    # Steps of 32 give the 64x64 and 96x32 images buckets of their own.
    return parse_payload(tiny_payload(bucket_reso_steps=32, **overrides)).config


class PoolVae(torch.nn.Module):
    """A VAE stand-in with a known encoding: the latent mean is the 8x8 average of the
    pixels (plus a zero fourth channel), its std a constant; every call is counted."""

    def __init__(self, std: float = 0.0) -> None:
        super().__init__()
        self.std = std
        self.calls: list[int] = []
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # device and fingerprint
        self.config = SimpleNamespace(
            scaling_factor=1.0, block_out_channels=[1, 1, 1, 1], latent_channels=4
        )

    def encode(self, pixels: torch.Tensor) -> SimpleNamespace:
        self.calls.append(pixels.shape[0])
        pooled = torch.nn.functional.avg_pool2d(pixels, 8)
        mean = torch.cat([pooled, torch.zeros_like(pooled[:, :1])], dim=1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=self.std))


@pytest.fixture(scope="module")
def two_buckets(tmp_path_factory) -> Path:
    sizes = [(64, 64), (96, 32)]
    return make_dataset(tmp_path_factory.mktemp("two"), {"1_a": 5}, sizes=sizes)


def images_of(data: Path, **overrides):
    c = config(**overrides)
    return bucket_images(scan_dataset(data, c.caption_extension).images, c), c


@shows_effect("vae_batch_size")
def test_vae_batch_size_batches_each_bucket_and_keeps_the_latents(tiny_model, two_buckets):
    model = load_sdxl(tiny_model)
    encode, calls = model.vae.encode, []

    def counting(pixels):
        calls.append(tuple(pixels.shape))
        return encode(pixels)

    model.vae.encode = counting
    results = {}
    for size in (1, 2):
        images, c = images_of(two_buckets, vae_batch_size=size)
        assert sorted({im.bucket for im in images}) == [(64, 64), (96, 32)]  # 3 and 2 images
        calls.clear()
        cache = cache_image_latents(
            model, images, c, torch.Generator().manual_seed(0), null_reporter
        )
        results[size] = (cache, list(calls))
    one, two = results[1][0].latents, results[2][0].latents
    assert [shape[0] for shape in results[1][1]] == [1] * 5
    assert sorted(shape[0] for shape in results[2][1]) == [1, 2, 2]  # ceil(3/2) + ceil(2/2)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(one, two, strict=True))
    assert not torch.allclose(one[0], one[2], atol=1e-3)  # different images differ


def test_each_latent_draws_the_same_noise_however_it_is_batched(two_buckets):
    images, _ = images_of(two_buckets)
    vae = PoolVae(std=1.0)
    latents = {
        size: cache_latents(vae, images, False, torch.Generator().manual_seed(5), batch_size=size)
        for size in (1, 3, 32)
    }
    for size in (3, 32):
        assert all(
            torch.equal(a, b)
            for a, b in zip(latents[1].latents, latents[size].latents, strict=True)
        )
    noise = [latent - vae.encode(pixels_for(im)[None]).latent_dist.mean[0] for latent, im in
             zip(latents[1].latents, images, strict=True)]  # fmt: skip
    assert all(n.abs().mean() > 0.5 for n in noise)  # unit-normal noise, and ...
    assert not torch.allclose(noise[0], noise[2])  # ... each image its own


def test_flip_aug_caches_the_encoding_of_each_mirrored_image(two_buckets):
    images, _ = images_of(two_buckets)
    vae = PoolVae()
    cache = cache_latents(vae, images, False, torch.Generator(), batch_size=2, flip=True)
    assert cache.flipped is not None and len(cache.flipped) == len(images)
    for plain, mirrored in zip(cache.latents, cache.flipped, strict=True):
        assert torch.allclose(mirrored, plain.flip(-1), atol=1e-6)  # pooling commutes with it
        assert not torch.equal(mirrored, plain)
    assert len(vae.calls) == 2 * 3  # a plain and a mirrored call per VAE batch
    assert cache_latents(PoolVae(), images, False, torch.Generator()).flipped is None


def test_the_disk_cache_keeps_mirrors_and_re_encodes_a_cache_without_them(tmp_path):
    data = make_dataset(tmp_path, {"1_a": 2})
    images, _ = images_of(data)
    cache_latents(PoolVae(), images, True, torch.Generator())  # no mirrors on disk yet
    vae = PoolVae()
    first = cache_latents(vae, images, True, torch.Generator(), flip=True)
    assert len(vae.calls) == 2 * 2
    files = sorted((data / "1_a").glob("*_sdxl_*.safetensors"))
    assert [sorted(load_file(str(f))) for f in files] == [["latents", "latents_flipped"]] * 2
    again = PoolVae()
    second = cache_latents(again, images, True, torch.Generator(), flip=True)
    assert again.calls == []
    assert first.flipped is not None and second.flipped is not None
    assert all(torch.equal(a, b) for a, b in zip(first.flipped, second.flipped, strict=True))
