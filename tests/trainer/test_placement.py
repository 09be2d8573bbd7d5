"""Where SDXL's frozen parts live (trainer/placement.py): off the training device once what
they compute is cached, back on it for sampling only, and the memory trace counting only
what stays on the device.

On a CPU-only machine the training device and the host are both the CPU, so these tests
give ``build_session`` the ``meta`` device as its host: a part (or a cache) that leaves the
device ends up there, and one that stays keeps its CPU tensors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.factories import make_dataset, seed_payload, tiny_payload
from trainer import run
from trainer.config import TrainingConfig, parse_payload
from trainer.data.folders import scan_dataset
from trainer.estimate.architecture import Architecture
from trainer.estimate.fake import prepared_meta_model
from trainer.estimate.model import estimate_footprint
from trainer.estimate.trace import trace_step
from trainer.hooks import ArtifactSaved, Event, null_reporter
from trainer.models.loading import load_sdxl
from trainer.placement import borrowed
from trainer.plan import plan_from_scan
from trainer.run import TrainingJob, build_session, pick_device
from trainer.sampling.samples import sample_if_due
from trainer.session import Session

META = torch.device("meta")
# The conditioning comes from the cache only with frozen encoders and fixed captions.
TEXT_CACHED = {"sdxl_cache_text_encoder_outputs": True, "text_encoder_lr": 0,
               "shuffle_caption": False}  # fmt: skip


def session(model: Path, data: Path, out: Path, host: torch.device, **overrides) -> Session:
    config = parse_payload(tiny_payload(max_train_steps=1, **overrides)).config
    scan = scan_dataset(data, config.caption_extension)
    job = TrainingJob(config, model, data, out)
    return build_session(job, scan, plan_from_scan(config, scan), null_reporter, 0, host=host)


def devices(module: torch.nn.Module) -> set[str]:
    return {t.device.type for t in (*module.parameters(), *module.buffers())}


def test_with_latents_cached_the_vae_leaves_the_device(tiny_model, toy_dataset, tmp_path):
    s = session(tiny_model, toy_dataset, tmp_path, META, cache_latents=True)
    model = s.model
    assert devices(model.vae) == {"meta"}
    assert devices(model.unet) == devices(model.text_encoder) == {"cpu"}
    assert devices(model.text_encoder_2) == {"cpu"}  # the seed trains them: they stay
    assert s.latents is not None and {t.device.type for t in s.latents} == {"cpu"}


def test_with_text_outputs_cached_the_frozen_encoders_and_the_cache_leave_the_device(
    tiny_model, toy_dataset, tmp_path
):
    s = session(tiny_model, toy_dataset, tmp_path, META, cache_latents=False, **TEXT_CACHED)
    model = s.model
    assert devices(model.text_encoder) == devices(model.text_encoder_2) == {"meta"}
    assert devices(model.unet) == devices(model.vae) == {"cpu"}  # the steps encode images
    assert s.text_cache is not None and len(s.text_cache) == len(s.images)
    assert {t.device.type for pair in s.text_cache for t in pair} == {"meta"}


def test_without_caching_every_part_stays_on_the_device(tiny_model, toy_dataset, tmp_path):
    s = session(tiny_model, toy_dataset, tmp_path, META, cache_latents=False)
    for part in (s.model.unet, s.model.vae, s.model.text_encoder, s.model.text_encoder_2):
        assert devices(part) == {"cpu"}
    assert s.latents is None and s.text_cache is None


class _Cached(Exception):
    """Stops ``build_session`` once latents are cached: the parts the test left on ``meta``
    can't follow to the device."""


def test_latents_are_cached_with_the_vae_alone_on_the_device(
    tiny_model, toy_dataset, tiny_config_dir, tmp_path, monkeypatch
):
    # The loader leaves every part on the host; here the UNet and the encoders wait on
    # ``meta`` (the VAE on the CPU: it encodes), so a part build_session placed on the
    # training device before caching would show as one there.
    config = parse_payload(tiny_payload(max_train_steps=1, cache_latents=True)).config
    model = load_sdxl(tiny_model)
    for part in (model.unet, model.text_encoder, model.text_encoder_2):
        part.to(META)
    device = pick_device().type
    seen: dict[str, set[str]] = {}
    on_device: list[int] = []
    real = run.cache_image_latents

    def caching(*args, **kwargs):
        parts = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoder,
                 "text_encoder_2": model.text_encoder_2}  # fmt: skip
        seen.update({name: devices(part) for name, part in parts.items()})
        on_device.append(_bytes(*(p for p in parts.values() if devices(p) == {device})))
        assert real(*args, **kwargs) is not None
        raise _Cached

    monkeypatch.setattr(run, "cache_image_latents", caching)
    scan = scan_dataset(toy_dataset, config.caption_extension)
    job = TrainingJob(config, tiny_model, toy_dataset, tmp_path)
    with pytest.raises(_Cached):
        build_session(job, scan, plan_from_scan(config, scan), null_reporter, 0, model=model)
    assert seen["vae"] == {device}
    for name in ("unet", "text_encoder", "text_encoder_2"):
        assert seen[name] == {"meta"}, name  # not on the training device yet
    # The memory model's caching phase holds exactly what was on the device.
    footprint = estimate_footprint(config, Architecture.from_config_dir(tiny_config_dir))
    assert on_device == [footprint.phases["caching_latents"]["weights"]]
    assert footprint.phases["caching_latents"]["lora"] == 0


@pytest.fixture(scope="module")
def cached_session(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Session:
    """Latents and text outputs cached; its host is the CPU, so it can sample."""
    data = make_dataset(tmp_path_factory.mktemp("data"), {"1_toy": 2})
    out = tmp_path_factory.mktemp("out")
    prompts = {"sample_every_n_steps": 1, "sample_prompts": "a toy --w 64 --h 64 --s 2"}
    return session(tiny_model, data, out, torch.device("cpu"), **TEXT_CACHED, **prompts)


def test_a_borrowed_part_is_on_the_device_for_the_block_then_back_on_its_own_tensors(
    cached_session,
):
    parts = (cached_session.model.vae, cached_session.model.text_encoder)
    before = [[(t.data_ptr(), t.clone()) for t in part.state_dict().values()] for part in parts]
    with borrowed(META, *parts):
        assert [devices(part) for part in parts] == [{"meta"}, {"meta"}]
    for part, held in zip(parts, before, strict=True):
        after = list(part.state_dict().values())
        assert [t.data_ptr() for t in after] == [ptr for ptr, _ in held]  # no copy back
        assert all(torch.equal(t, value) for t, (_, value) in zip(after, held, strict=True))


def test_sampling_borrows_the_vae_and_encoders_and_gives_each_its_own_tensors_back(
    cached_session,
):
    s = cached_session
    model = s.model
    borrowed_parts = (model.vae, model.text_encoder, model.text_encoder_2)
    host = [[id(p) for p in part.parameters()] for part in borrowed_parts]
    kept = [t.data_ptr() for t in model.unet.state_dict().values()]
    during: list[list[list[int]]] = []

    def reporter(event: Event) -> None:
        if isinstance(event, ArtifactSaved):  # reported while the sample's parts are out
            during.append([[id(p) for p in part.parameters()] for part in borrowed_parts])

    sample_if_due(s, reporter, step=1, epoch=1, epoch_end=False)
    assert len(during) == 1
    # Device and host are both the CPU here: what shows the parts were borrowed is that
    # sampling ran on the device copies' Parameters, none of them the host's.
    for ids_during, ids_host in zip(during[0], host, strict=True):
        assert not set(ids_during) & set(ids_host)
    assert [[id(p) for p in part.parameters()] for part in borrowed_parts] == host
    assert [t.data_ptr() for t in model.unet.state_dict().values()] == kept


# --- the trace ----------------------------------------------------------------------------


def _config(**overrides: object) -> TrainingConfig:
    small = {"max_resolution": "64,64", "min_bucket_reso": 64, "train_batch_size": 1,
             "gradient_checkpointing": False}  # fmt: skip
    return parse_payload({**seed_payload(), **small, **overrides}).config


def _bytes(*modules: torch.nn.Module) -> int:
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.slow
def test_the_trace_counts_no_weights_of_the_parts_that_wait_on_the_host(tiny_config_dir: Path):
    config = _config(**TEXT_CACHED)  # and the seed caches latents
    trace = trace_step(config, base=tiny_config_dir)
    meta = prepared_meta_model(config, tiny_config_dir)
    lora = trace.parts["lora"]
    assert lora == 4 * meta.network.parameter_count()
    assert trace.parts["weights"] == _bytes(meta.model.unet) - lora  # no VAE, no encoders
    assert sum(trace.parts.values()) == trace.peak_bytes
