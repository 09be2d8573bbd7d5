"""A training session of fake tensors: the trainer's own set-up, on no memory at all.

The models are built from their configs on the ``meta`` device (no weights, no init
compute) and prepared there by the trainer's own ``prepare_model`` (frozen dtype,
gradient checkpointing, train mode) and ``build_network`` (peft LoRA, fp32). Only then are
they given fake CPU storage (``Module.to_empty`` under ``FakeTensorMode``): a fake
module cannot be moved or cast afterwards (``Module._apply`` swaps a FakeTensor parameter
with ``torch.utils.swap_tensors``, which refuses it: "Cannot swap t1 because it has weakref
associated with it"), so every ``.to()`` the set-up makes has to happen on ``meta``.

The rest follows ``trainer.run.build_session`` step by step with its own functions
(``build_optimization``, ``all_snr``, ``cache_text_outputs``). ``build_session`` itself
can't run here: it moves the model to ``pick_device()`` and what it caches to the host (a
fake module can't be moved), resolves fp16 to fp32 on a CPU, and caches latents from a
dataset on disk. So every part gets fake storage on the one fake device, and the trace
leaves out what ``trainer.placement.Offload`` sends to the host; the text cache is always
made in memory here (a fake tensor can't be written to disk), which the trace doesn't count
either way.

One batch of ``train_batch_size`` images at the config's ``resolution`` (its largest
bucket) with any caption: the tokenizers always pad to ``max_token_length``. Cached
latents are fake tensors of the cache's shape and dtype; without the cache the step
encodes each image with the VAE, from a tiny PNG that ``pixels_for`` resizes to the bucket.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from trainer.config import TrainingConfig
from trainer.data.augment import augment_rng
from trainer.data.batches import Batch, bucket_images
from trainer.data.folders import DatasetScan, FolderSummary, ImageRecord
from trainer.data.latents import latent_shape
from trainer.job import TrainingJob
from trainer.lora.network import LoraNetwork
from trainer.loss import all_snr
from trainer.models.configs import read_component_config
from trainer.models.loading import SdxlModel, training_noise_scheduler
from trainer.models.tokenizers import build_sdxl_tokenizers
from trainer.plan import plan_from_scan
from trainer.run import (
    PRECISION_DTYPES,
    build_network,
    build_optimization,
    place_for_steps,
    prepare_model,
)
from trainer.session import Session
from trainer.step import cache_text_outputs

CAPTION = "a photo of a toy, on a table, studio light"
FOLDER = "1_trace"


@dataclass
class FakeRun:
    session: Session
    batch: Batch  # the step's batch: every image of the session, in one bucket


def meta_sdxl(config_dir: Path) -> SdxlModel:
    """SDXL's four networks built from ``config_dir`` on the meta device."""

    def config(component: str) -> dict[str, Any]:
        data = read_component_config(config_dir, component)
        for key in ("torch_dtype", "dtype"):  # build in fp32, as load_sdxl does
            data.pop(key, None)
        return data

    tokenizer, tokenizer_2 = build_sdxl_tokenizers()
    scheduler = training_noise_scheduler()  # real: its tables index the fake timesteps
    with torch.device("meta"):
        return SdxlModel(
            unet=UNet2DConditionModel.from_config(config("unet")),
            vae=AutoencoderKL.from_config(config("vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            noise_scheduler=scheduler,
        )


def _records(config: TrainingConfig, workdir: Path) -> tuple[ImageRecord, ...]:
    """``train_batch_size`` images of the config's resolution, sharing one tiny PNG."""
    image = workdir / FOLDER / "image.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (127, 127, 127)).save(image)
    return tuple(
        ImageRecord(image, CAPTION, config.resolution, FOLDER, repeats=1)
        for _ in range(config.train_batch_size)
    )


@dataclass
class MetaModel:
    model: SdxlModel
    network: LoraNetwork
    precision: str


def prepared_meta_model(config: TrainingConfig, config_dir: Path) -> MetaModel:
    """The trainer's ``prepare_model`` and ``build_network`` on meta; call outside
    FakeTensorMode (under it, factories make fake tensors, which can't be cast)."""
    if config.fp8_base:
        # Not taught yet: store_base_in_fp8 puts each layer's fp8 weight behind a
        # parametrization that casts a copy at each access (trainer/models/fp8.py); the model
        # counts both by formula (trainer/estimate/model.py: _fp8_savings, _fp8_copies).
        raise NotImplementedError("fp8_base can't be traced yet")
    precision = config.mixed_precision  # what resolve_precision keeps on a CUDA device
    model = meta_sdxl(config_dir)
    prepare_model(model, config, torch.device("meta"), precision)
    place_for_steps(model, torch.device("meta"))  # after caching latents (build_session)
    network = build_network(model, TrainingJob(config, config_dir, config_dir, config_dir))
    return MetaModel(model, network, precision)


def fake_run(config: TrainingConfig, meta: MetaModel, workdir: Path) -> FakeRun:
    """The session ``build_session`` would make, on fake tensors; call inside FakeTensorMode
    (and :func:`trainer.estimate.autocast.cuda_autocast_rules`, for the text cache)."""
    model, network, precision = meta.model, meta.network, meta.precision
    for part in (model.unet, model.vae, model.text_encoder, model.text_encoder_2):
        part.to_empty(device="cpu")
    records = _records(config, workdir)
    scan = DatasetScan(records, (FolderSummary(FOLDER, 1, len(records)),), ())
    plan = plan_from_scan(config, scan)
    images = bucket_images(records, config)
    optimizer, scheduler, names = build_optimization(config, network, plan)
    cached = config.cache_latents or config.cache_latents_to_disk
    shape = latent_shape(model.vae, images[0].bucket)
    seed = config.seed or 0
    flipped = cached and config.flip_aug
    session = Session(
        config=config, plan=plan, model=model, network=network, images=images,
        latents=[torch.empty(shape) for _ in images] if cached else None,
        optimizer=optimizer, scheduler=scheduler, snr=all_snr(model.noise_scheduler.alphas_cumprod),
        device=torch.device("cpu"), autocast_dtype=PRECISION_DTYPES.get(precision),
        # GradScaler only scales the loss and unscales gradients in place: no memory.
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        seed=seed, output_dir=workdir, metadata={}, caption_rng=random.Random(seed),
        latent_generator=torch.Generator().manual_seed(seed), group_names=names,
        augment_rng=augment_rng(seed),
        flipped_latents=[torch.empty(shape) for _ in images] if flipped else None,
        train_text_encoder=config.train_text_encoder,
    )  # fmt: skip
    if config.cache_text_encoder_outputs:
        session.text_cache = cache_text_outputs(session, to_disk=False)
    return FakeRun(session, Batch(images[0].bucket, tuple(range(len(images)))))
