"""Set up a training run from a job and hand it to the loop.

``train`` is the library's entry point: ``python -m trainer``, the worker's
child process and the tests all call it. It talks to its host only through the
reporter and stop signal passed in.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.config import TrainingConfig
from trainer.data.batches import bucket_images
from trainer.data.folders import DatasetScan, scan_dataset
from trainer.data.latents import cache_latents
from trainer.errors import OutOfMemoryError
from trainer.hooks import Notice, PhaseChanged, Reporter, StopSignal, never_stop, null_reporter
from trainer.loop import StepHook, TrainingResult, run_training
from trainer.lora.kohya_file import load_lora_into
from trainer.lora.metadata import RunFacts, run_metadata
from trainer.lora.network import LoraNetwork, apply_lora
from trainer.lora.regularizers import Dropouts, install_dropouts
from trainer.loss import all_snr
from trainer.models.loading import SdxlModel, load_sdxl
from trainer.optim.optimizers import build_optimizer, describe_optimizer
from trainer.optim.schedulers import build_scheduler
from trainer.plan import TrainingPlan, plan_from_scan, text_encoder_stop_step, training_records
from trainer.session import Session
from trainer.step import cache_text_outputs

__all__ = ["TrainingJob", "TrainingResult", "train"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainingJob:
    config: TrainingConfig
    base_model: Path
    data_dir: Path
    output_dir: Path
    base_config: Path | None = None
    vae: Path | None = None
    reg_data_dir: Path | None = None
    network_weights: Path | None = None
    resume_state: Path | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_precision(requested: str, device: torch.device, reporter: Reporter) -> str:
    """fp16 needs CUDA; elsewhere train in fp32 and say so."""
    if device.type != "cuda" and requested == "fp16":
        reporter(Notice("fp16 needs a CUDA GPU; training in fp32 instead", "mixed_precision"))
        return "no"
    return requested


def prepare_model(
    model: SdxlModel, config: TrainingConfig, device: torch.device, precision: str
) -> None:
    """Freeze the base, place it, and cast the frozen weights to the training dtype."""
    frozen_dtype = _DTYPES.get(precision, torch.float32)
    for part in (model.unet, model.text_encoder, model.text_encoder_2, model.vae):
        part.requires_grad_(False)
        part.eval()
    model.unet.to(device, frozen_dtype)
    model.text_encoder.to(device, frozen_dtype)
    model.text_encoder_2.to(device, frozen_dtype)
    model.vae.to(device, torch.float32)  # the SDXL VAE overflows in fp16
    if config.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            for encoder in (model.text_encoder, model.text_encoder_2):
                encoder.gradient_checkpointing_enable({"use_reentrant": False})
    if config.train_unet:
        model.unet.train()  # gradient checkpointing only runs in train mode
    if config.train_text_encoder:
        model.text_encoder.train()
        model.text_encoder_2.train()


def build_network(model: SdxlModel, job: TrainingJob) -> LoraNetwork:
    config = job.config
    network = apply_lora(
        model.unet if config.train_unet else None,
        (model.text_encoder, model.text_encoder_2) if config.train_text_encoder else None,
        config.network_dim,
        config.network_alpha,
    )
    if job.network_weights is not None:
        load_lora_into(network, job.network_weights)
    dropouts = Dropouts(config.network_dropout, config.rank_dropout, config.module_dropout)
    install_dropouts(network, dropouts)
    if config.full_bf16:
        for parameter in network.parameters():
            parameter.data = parameter.data.to(torch.bfloat16)
    return network


def parameter_groups(config: TrainingConfig, network: LoraNetwork) -> tuple[list[dict], list[str]]:
    groups, names = [], []
    if config.train_text_encoder:
        groups.append(
            {"params": list(network.parameters("textencoder")), "lr": config.text_encoder_lr}
        )
        names.append("textencoder")
    if config.train_unet:
        groups.append({"params": list(network.parameters("unet")), "lr": config.unet_lr})
        names.append("unet")
    return groups, names


def build_session(
    job: TrainingJob,
    scan: DatasetScan,
    plan: TrainingPlan,
    reporter: Reporter,
    seed: int,
    model: SdxlModel | None = None,
    reg_scan: DatasetScan | None = None,
) -> Session:
    """Everything the loop needs; ``model`` skips loading (benchmarks build one in memory)."""
    config = job.config
    device = pick_device()
    precision = resolve_precision(config.mixed_precision, device, reporter)
    if model is None:
        model = load_sdxl(job.base_model, job.base_config, job.vae)
    prepare_model(model, config, device, precision)
    network = build_network(model, job)
    images = bucket_images(training_records(scan, reg_scan), config)
    latents, latent_generator = None, torch.Generator().manual_seed(seed)
    if config.cache_latents or config.cache_latents_to_disk:
        reporter(PhaseChanged("caching"))
        latents = cache_latents(model.vae, images, config.cache_latents_to_disk, latent_generator)
    groups, names = parameter_groups(config, network)
    optimizer = build_optimizer(config.optimizer, groups, config.optimizer_args)
    scheduler = build_scheduler(
        config.lr_scheduler, optimizer, plan.total_steps, plan.warmup_steps,
        config.lr_scheduler_num_cycles, config.lr_scheduler_power, config.lr_scheduler_args,
    )  # fmt: skip
    facts = RunFacts(
        plan, scan, images, job.base_model, job.vae,
        describe_optimizer(optimizer, config.optimizer_args), seed, time.time(), precision,
        reg_scan,
    )  # fmt: skip
    alphas = model.noise_scheduler.alphas_cumprod
    session = Session(
        config=config, plan=plan, model=model, network=network, images=images,
        latents=latents, optimizer=optimizer, scheduler=scheduler, snr=all_snr(alphas),
        device=device, autocast_dtype=_DTYPES.get(precision),
        scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None,
        seed=seed, output_dir=job.output_dir, metadata=run_metadata(config, facts),
        caption_rng=random.Random(seed), latent_generator=latent_generator, group_names=names,
        train_text_encoder=config.train_text_encoder,
        text_encoder_stop_step=(
            text_encoder_stop_step(config.stop_text_encoder_training_pct, plan.total_steps)
            if config.train_text_encoder else None
        ),
    )  # fmt: skip
    if config.cache_text_encoder_outputs:
        reporter(PhaseChanged("caching"))
        session.text_cache = cache_text_outputs(session)
    return session


def train(
    job: TrainingJob,
    reporter: Reporter = null_reporter,
    stop: StopSignal = never_stop,
    step_hook: StepHook | None = None,
) -> TrainingResult:
    """Train a LoRA for ``job``; files land in ``job.output_dir``."""
    reporter(PhaseChanged("loading"))
    config = job.config
    scan = scan_dataset(job.data_dir, config.caption_extension)
    reg_scan = None
    if job.reg_data_dir is not None:
        reg_scan = scan_dataset(job.reg_data_dir, config.caption_extension, is_reg=True)
    plan = plan_from_scan(config, scan, reg_scan)
    seed = config.seed if config.seed is not None else random.randint(0, 2**32 - 1)
    seed_everything(seed)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        session = build_session(job, scan, plan, reporter, seed, reg_scan=reg_scan)
        return run_training(session, reporter, stop, step_hook)
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(_oom_message(exc)) from exc


def _oom_message(exc: BaseException) -> str:
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    return (
        f"CUDA out of memory (peak {peak / 2**30:.2f} GiB allocated): {exc}. Reduce it with a "
        "smaller train_batch_size or max_resolution, gradient_checkpointing on, cache_latents on, "
        "AdamW8bit or Adafactor, a lower network_dim, or unet only (text_encoder_lr 0)"
    )
