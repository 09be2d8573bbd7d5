"""Each core key's non-default value changes something observable.

Cheap checks at the level where the value acts: the buckets, the dataset scan,
the optimizer and its schedule, the timesteps drawn, the prepared model, the
metadata written into the file. Keys with a heavier test elsewhere are marked
there (``@shows_effect``).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.data.batches import bucket_images
from trainer.data.folders import ImageRecord, scan_dataset
from trainer.errors import InvalidDatasetError
from trainer.lora.metadata import RunFacts, run_metadata
from trainer.loss import sample_timesteps
from trainer.models.loading import load_sdxl
from trainer.optim.optimizers import build_optimizer
from trainer.optim.schedulers import build_scheduler
from trainer.plan import plan_from_scan
from trainer.run import parameter_groups, prepare_model


def config(**overrides):
    return parse_payload(tiny_payload(**overrides)).config


def buckets_for(sizes, **overrides) -> list[tuple[int, int]]:
    records = tuple(
        ImageRecord(Path(f"{i}.png"), "", size, "1_x", 1) for i, size in enumerate(sizes)
    )
    return [image.bucket for image in bucket_images(records, config(**overrides))]


SIZES = [(300, 200), (96, 200), (128, 128)]
BASE_BUCKETS = dict(max_resolution="128,128", min_bucket_reso=64, max_bucket_reso=256)


@shows_effect("max_resolution")
def test_max_resolution_sets_the_bucket_area():
    small = buckets_for(SIZES, **BASE_BUCKETS)
    large = buckets_for(SIZES, **{**BASE_BUCKETS, "max_resolution": "192,192"})
    assert small != large
    assert max(w * h for w, h in small) <= 128 * 128 < max(w * h for w, h in large)


@shows_effect("bucket_no_upscale", "min_bucket_reso", "max_bucket_reso")
def test_predefined_buckets_follow_min_and_max_bucket_reso():
    per_image = buckets_for(SIZES, **BASE_BUCKETS)
    predefined = buckets_for(SIZES, **{**BASE_BUCKETS, "bucket_no_upscale": False})
    assert per_image != predefined
    narrow = buckets_for(
        SIZES, **{**BASE_BUCKETS, "bucket_no_upscale": False, "max_bucket_reso": 128}
    )
    assert max(max(b) for b in narrow) <= 128 < max(max(b) for b in predefined)
    wide_min = buckets_for(
        SIZES, **{**BASE_BUCKETS, "bucket_no_upscale": False, "min_bucket_reso": 128}
    )
    assert min(min(b) for b in wide_min) >= 128 > min(min(b) for b in predefined)


@shows_effect("bucket_reso_steps")
def test_bucket_reso_steps_sets_the_side_granularity():
    area = dict(max_resolution="256,256", max_bucket_reso=256)
    assert buckets_for([(230, 130)], **area, bucket_reso_steps=64) == [(192, 128)]
    assert buckets_for([(230, 130)], **area, bucket_reso_steps=32) == [(224, 128)]


@shows_effect("enable_bucket")
def test_disabled_bucketing_trains_every_image_at_the_resolution():
    sizes = [(128, 128), (160, 128)]
    assert buckets_for(sizes, max_resolution="128,128", enable_bucket=True)[1] != (128, 128)
    with pytest.raises(InvalidDatasetError, match="160x128, not the training resolution"):
        buckets_for(sizes, max_resolution="128,128", enable_bucket=False)


@shows_effect("caption_extension")
def test_caption_extension_picks_the_caption_file(tmp_path):
    folder = tmp_path / "1_thing"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(folder / "a.png")
    (folder / "a.txt").write_text("from txt")
    (folder / "a.caption").write_text("from caption")
    assert scan_dataset(tmp_path, ".txt").images[0].caption == "from txt"
    assert scan_dataset(tmp_path, config(caption_extension="caption").caption_extension).images[
        0
    ].caption == ("from caption")


@shows_effect("min_timestep", "max_timestep")
def test_timesteps_are_drawn_from_min_to_max_timestep():
    c = config(min_timestep=200, max_timestep=300)
    t = sample_timesteps(4000, c.min_timestep, c.max_timestep, torch.Generator().manual_seed(0))
    assert int(t.min()) == 200 and int(t.max()) == 299
    default = config()
    t = sample_timesteps(
        4000, default.min_timestep, default.max_timestep, torch.Generator().manual_seed(0)
    )
    assert int(t.min()) < 10 and int(t.max()) > 990


def params(count: int = 2) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3)) for _ in range(count)]


@shows_effect("optimizer")
def test_optimizer_name_picks_the_optimizer_class():
    names = {}
    for name in ("AdamW", "Lion", "Prodigy", "AdamW8bit"):
        c = config(optimizer=name, learning_rate=1.0 if name == "Prodigy" else 1e-4)
        names[name] = type(build_optimizer(c.optimizer, [{"params": params()}], {})).__name__
    assert names == {
        "AdamW": "AdamW",
        "Lion": "Lion",
        "Prodigy": "Prodigy",
        "AdamW8bit": "AdamW8bit",
    }


@shows_effect("optimizer_args")
def test_optimizer_args_reach_the_optimizer():
    c = config(optimizer_args="weight_decay=0.25 betas=0.8,0.9")
    optimizer = build_optimizer(c.optimizer, [{"params": params()}], c.optimizer_args)
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 0.25 and tuple(group["betas"]) == (0.8, 0.9)


@shows_effect("lr_scheduler_args")
def test_lr_scheduler_args_reach_the_schedule():
    def final_lr(args: str) -> float:
        c = config(lr_scheduler="polynomial", lr_warmup=0, lr_scheduler_args=args)
        optimizer = torch.optim.SGD(params(1), lr=1.0)
        scheduler = build_scheduler(
            c.lr_scheduler, optimizer, 10, 0, 1, c.lr_scheduler_power, c.lr_scheduler_args
        )
        for _ in range(10):
            optimizer.step()
            scheduler.step()
        return float(optimizer.param_groups[0]["lr"])

    assert final_lr("") == pytest.approx(1e-7)
    assert final_lr("lr_end=0.5") == pytest.approx(0.5)


@shows_effect("learning_rate", "unet_lr", "text_encoder_lr")
def test_part_rates_and_the_fallback_rate_reach_the_parameter_groups():
    class Network:
        def parameters(self, part):
            return iter(params(1))

    def rates(**overrides):
        groups, names = parameter_groups(config(**overrides), Network())
        return {name: g["lr"] for name, g in zip(names, groups, strict=True)}

    assert rates(unet_lr=3e-4, text_encoder_lr=2e-5) == {"unet": 3e-4, "textencoder": 2e-5}
    assert rates(learning_rate=5e-4, unet_lr=0, text_encoder_lr=0) == {
        "unet": 5e-4,
        "textencoder": 5e-4,
    }


@shows_effect("network_train_unet_only", "network_train_text_encoder_only")
def test_sd_scripts_part_flags_drop_the_other_parts_group():
    unet_only = config(network_train_unet_only=True)
    te_only = config(network_train_text_encoder_only=True)
    assert (unet_only.train_unet, unet_only.train_text_encoder) == (True, False)
    assert (te_only.train_unet, te_only.train_text_encoder) == (False, True)


@shows_effect("max_grad_norm")
def test_max_grad_norm_clips_the_gradient_norm():
    from trainer.loop import optimizer_step

    class S:  # the slice of a Session that optimizer_step reads
        def __init__(self, norm):
            self.parameter = torch.nn.Parameter(torch.zeros(4))
            self.network = type("N", (), {"parameters": lambda _: iter([self.parameter])})()
            self.config = config(max_grad_norm=norm)
            self.optimizer = torch.optim.SGD([self.parameter], lr=1.0)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
            self.scaler = torch.amp.GradScaler("cuda", enabled=False)

    moved = {}
    for norm in (1.0, 0.1):
        s = S(norm)
        s.parameter.grad = torch.full((4,), 10.0)
        optimizer_step(s)
        moved[norm] = float(s.parameter.detach().norm())
    assert moved == pytest.approx({1.0: 1.0, 0.1: 0.1})


@shows_effect("gradient_checkpointing", "mixed_precision")
def test_checkpointing_and_precision_shape_the_prepared_model(tiny_model):
    model = load_sdxl(tiny_model)
    c = config(gradient_checkpointing=True, mixed_precision="bf16")
    prepare_model(model, c, torch.device("cpu"), c.mixed_precision)
    assert model.unet.is_gradient_checkpointing
    assert next(model.unet.parameters()).dtype == torch.bfloat16
    model = load_sdxl(tiny_model)
    c = config(gradient_checkpointing=False, mixed_precision="no")
    prepare_model(model, c, torch.device("cpu"), c.mixed_precision)
    assert not model.unet.is_gradient_checkpointing
    assert next(model.unet.parameters()).dtype == torch.float32


def metadata_for(toy_dataset, vae_file: Path | None = None, **overrides) -> dict[str, str]:
    c = config(**overrides)
    scan = scan_dataset(toy_dataset, c.caption_extension)
    plan = plan_from_scan(c, scan)
    images = bucket_images(scan.images, c)
    facts = RunFacts(plan, scan, images, Path("base.safetensors"), vae_file, "opt", 1, 0.0, "no")
    random.seed(0)
    return run_metadata(c, facts)


@shows_effect(
    "training_comment",
    "metadata_title",
    "metadata_author",
    "metadata_description",
    "metadata_license",
    "metadata_tags",
    "clip_skip",
)
def test_metadata_keys_are_written_into_the_file_metadata(toy_dataset):
    default = metadata_for(toy_dataset, clip_skip=1)
    meta = metadata_for(
        toy_dataset,
        training_comment="first try",
        metadata_title="My LoRA",
        metadata_author="me",
        metadata_description="a test",
        metadata_license="CC0",
        metadata_tags="toy, test",
        clip_skip=2,
    )
    assert meta["ss_training_comment"] == "first try" and default["ss_training_comment"] == "None"
    assert meta["modelspec.title"] == "My LoRA" and default["modelspec.title"] == "toy"
    expected = {"author": "me", "description": "a test", "license": "CC0", "tags": "toy, test"}
    for key, value in expected.items():
        assert meta[f"modelspec.{key}"] == value and f"modelspec.{key}" not in default
    assert (meta["ss_clip_skip"], meta["modelspec.encoder_layer"]) == ("2", "2")
    assert default["ss_clip_skip"] == "1"


@shows_effect("vae")
def test_a_replacement_vae_is_named_and_hashed_in_the_metadata(toy_dataset, tmp_path):
    vae = tmp_path / "fixed-vae.safetensors"
    vae.write_bytes(b"\0" * 64)
    meta = metadata_for(toy_dataset, vae_file=vae, vae="fixed-vae.safetensors")
    assert meta["ss_vae_name"] == "fixed-vae.safetensors" and len(meta["ss_new_vae_hash"]) == 64
    assert "ss_vae_name" not in metadata_for(toy_dataset)


class _Encoder(torch.nn.Module):
    """Just enough of a CLIP text encoder for LoRA injection: layers.N.mlp.fc1."""

    def __init__(self) -> None:
        super().__init__()
        block = torch.nn.Module()
        block.mlp = torch.nn.Module()
        block.mlp.fc1 = torch.nn.Linear(4, 4)
        self.layers = torch.nn.ModuleList([block])


@shows_effect("save_precision")
def test_save_precision_sets_the_dtype_of_every_saved_tensor():
    from trainer.lora.kohya_file import kohya_state_dict
    from trainer.lora.network import apply_lora

    network = apply_lora(None, (_Encoder(), _Encoder()), 2, 1.0)
    for precision, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        state = kohya_state_dict(network, config(save_precision=precision).save_precision)
        assert {t.dtype for t in state.values()} == {dtype}
    state = kohya_state_dict(network, config(save_precision="float").save_precision)
    assert {t.dtype for t in state.values()} == {torch.float32}


@shows_effect("cache_latents")
def test_without_cache_latents_nothing_is_encoded_before_training(
    tiny_model, toy_dataset, tmp_path
):
    from trainer.hooks import PhaseChanged
    from trainer.run import TrainingJob, train

    events: list = []
    c = config(cache_latents=False, max_train_steps=1, save_every_n_epochs=0)
    train(TrainingJob(c, tiny_model, toy_dataset, tmp_path), events.append)
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert "caching" not in phases and "training" in phases
