"""Set up a training run from a job and hand it to the loop.

``train`` is the library's entry point: ``python -m trainer``, the worker's
child process and the tests all call it. It talks to its host only through the
reporter and stop signal passed in.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from trainer.config import TrainingConfig
from trainer.data.augment import augment_rng
from trainer.data.batches import TrainingImage, bucket_images
from trainer.data.folders import DatasetScan, scan_dataset
from trainer.data.latents import LatentCache, cache_latents
from trainer.errors import OutOfMemoryError, TrainingCancelled, TrainingSuspended
from trainer.hooks import Notice, PhaseChanged, Reporter, StopSignal, never_stop, null_reporter
from trainer.job import TrainingJob
from trainer.loop import StepHook, TrainingResult, run_training
from trainer.lora.build import build_network as build_lora_network
from trainer.lora.build import network_parts
from trainer.lora.groups import parameter_groups
from trainer.lora.metadata import RunFacts, run_metadata
from trainer.lora.network import LoraNetwork
from trainer.loss import all_snr
from trainer.models.fp8 import store_base_in_fp8
from trainer.models.loading import SdxlModel, load_sdxl
from trainer.optim.optimizers import build_optimizer, describe_optimizer
from trainer.optim.schedulers import build_scheduler
from trainer.placement import HOST, Offload, to_host
from trainer.plan import (
    TrainingPlan,
    gui_images_x_repeats,
    gui_steps,
    reuse_or_plan,
    text_encoder_stop_step,
    training_records,
)
from trainer.scaling import gradient_scaler
from trainer.session import Session
from trainer.state.training_state import (
    check_same_run,
    read_state_header,
    restore_training_state,
)
from trainer.step import cache_text_outputs

__all__ = ["TrainingJob", "TrainingResult", "train"]

PRECISION_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class SetupStop:
    """The host's stop signal between setup phases, before the first step (``StopRequest``)."""

    stop: StopSignal = never_stop
    start_step: int = 0  # a resumed run's step: where a suspend during setup leaves it

    def check(self) -> bool:
        """Raises on abort or suspend; True when asked to finish (skip what only training needs)."""
        request = self.stop()
        if request == "abort":
            raise TrainingCancelled()
        if request == "suspend":
            raise TrainingSuspended(None, self.start_step)
        return request == "finish"


class _CachingCutShort(Exception):  # noqa: N818 - a control-flow signal
    """Asked to finish while caching: no step will read a latent."""


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
    """Freeze the base and cast the frozen weights to the training dtype; only the VAE goes
    to ``device`` here. Latents are cached before the UNet and the encoders join it
    (:func:`place_for_steps`), as sd-scripts does (``train_network.py:
    NetworkTrainer.train`` moves only the VAE to the device for ``cache_latents``, then casts
    the UNet without moving it; ``accelerator.prepare`` places it later): caching then holds
    the VAE alone (docs/estimates.md, "Phases")."""
    frozen_dtype = PRECISION_DTYPES.get(precision, torch.float32)
    for part in (model.unet, model.text_encoder, model.text_encoder_2, model.vae):
        part.requires_grad_(False)
        part.eval()
    for part in steps_parts(model):
        part.to(frozen_dtype)
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


def steps_parts(model: SdxlModel) -> tuple[torch.nn.Module, ...]:
    """The frozen parts that join the device only once latents are cached (or skipped): the
    UNet and both text encoders. The memory trace reads it too
    (``trainer.estimate.trace_caching``)."""
    return (model.unet, model.text_encoder, model.text_encoder_2)


def place_for_steps(model: SdxlModel, device: torch.device) -> None:
    """:func:`steps_parts` on ``device`` in the dtype :func:`prepare_model` gave them."""
    for part in steps_parts(model):
        part.to(device)


def build_network(model: SdxlModel, job: TrainingJob) -> LoraNetwork:
    """The config's network type on the parts being trained (``trainer.lora.build``)."""
    config = job.config
    unet, encoders = network_parts(model.unet, (model.text_encoder, model.text_encoder_2), config)
    network = build_lora_network(config, unet, encoders, job.network_weights)
    full = torch.float16 if config.full_fp16 else torch.bfloat16 if config.full_bf16 else None
    if full is not None:  # sd-scripts: network.to(weight_dtype) with --full_fp16 / --full_bf16
        for parameter in network.parameters():
            parameter.data = parameter.data.to(full)
    return network


def build_optimization(
    config: TrainingConfig, network: LoraNetwork, plan: TrainingPlan
) -> tuple[Optimizer, LRScheduler, list[str]]:
    """The optimizer over the trained parts' groups, its schedule, and the groups' names."""
    groups, names = parameter_groups(config, network)
    optimizer = build_optimizer(config.optimizer, groups, config.optimizer_args)
    scheduler = build_scheduler(
        config.lr_scheduler, optimizer, plan.total_steps, plan.warmup_steps,
        config.lr_scheduler_num_cycles, config.lr_scheduler_power, config.lr_scheduler_args,
    )  # fmt: skip
    return optimizer, scheduler, names


def cache_image_latents(
    model: SdxlModel,
    images: list[TrainingImage],
    config: TrainingConfig,
    generator: torch.Generator,
    reporter: Reporter,
    setup: SetupStop | None = None,
) -> LatentCache | None:
    """``cache_latents``: every image encoded once up front (and its mirror with flip_aug).

    The stop signal is polled after each VAE batch: an abort or suspend ends the run there,
    a finish ends caching (None: no step will run)."""
    if not (config.cache_latents or config.cache_latents_to_disk):
        return None
    reporter(PhaseChanged("caching"))
    gate = setup or SetupStop()

    def between_batches(done: int, total: int) -> None:
        if gate.check():
            raise _CachingCutShort()

    try:
        return cache_latents(
            model.vae, images, config.cache_latents_to_disk, generator, between_batches,
            batch_size=config.vae_batch_size, flip=config.flip_aug, masks=config.masked_loss,
        )  # fmt: skip
    except _CachingCutShort:
        return None


def text_encoder_stop(
    config: TrainingConfig, scan: DatasetScan, reg_scan: DatasetScan | None
) -> int | None:
    """``stop_text_encoder_training_pct`` as a step, counted from the GUI's own step estimate:
    kohya_ss v24.1.7 ``kohya_gui/lora_gui.py: train_model`` computes
    ``stop_text_encoder_training = ceil(max_train_steps / 100 * pct)`` from the same
    ``max_train_steps`` it derives ``lr_warmup_steps`` from (``trainer.plan.gui_steps``; with
    ``max_train_epochs`` the run's total differs, the GUI's number does not)."""
    if not config.train_text_encoder:
        return None
    total = gui_steps(config, gui_images_x_repeats(scan), with_reg=reg_scan is not None)
    return text_encoder_stop_step(config.stop_text_encoder_training_pct, total)


def build_session(
    job: TrainingJob,
    scan: DatasetScan,
    plan: TrainingPlan,
    reporter: Reporter,
    seed: int,
    model: SdxlModel | None = None,
    reg_scan: DatasetScan | None = None,
    setup: SetupStop | None = None,
    host: torch.device = HOST,
) -> Session:
    """Everything the loop needs; ``model`` skips loading (benchmarks build one in memory).

    ``setup`` polls the host's stop signal after each phase (see ``StopRequest``). What is
    cached leaves the device for ``host`` (``trainer.placement``)."""
    config = job.config
    gate = setup or SetupStop()
    device = pick_device()
    precision = resolve_precision(config.mixed_precision, device, reporter)
    if model is None:
        model = load_sdxl(job.base_model, job.base_config, job.vae)
    prepare_model(model, config, device, precision)
    finishing = gate.check()  # a finish skips caching: no step will read a latent
    images = bucket_images(training_records(scan, reg_scan), config)
    latent_generator = torch.Generator().manual_seed(seed)
    cache = None
    if not finishing:  # with only the VAE on the device (prepare_model)
        cache = cache_image_latents(model, images, config, latent_generator, reporter, gate)
    if Offload.for_config(config).vae:  # the steps read the cached latents instead
        to_host(host, model.vae)
    if cache is not None:
        # Placing the model and building the network are loading, not caching: the workers'
        # time model learns caching per image (core/workers/model.py) and loading per job.
        reporter(PhaseChanged("loading"))
    place_for_steps(model, device)
    # Caching draws only from its own generators, so the network's initial weights take
    # the same global random numbers as when it was built before caching.
    network = build_network(model, job)  # a finish still needs it: the LoRA file is saved
    if config.fp8_base:  # after the LoRA is injected, so that its own weights stay fp32
        store_base_in_fp8(model, PRECISION_DTYPES.get(precision, torch.float32))
    finishing = gate.check() or finishing
    optimizer, scheduler, names = build_optimization(config, network, plan)
    facts = RunFacts(
        plan, scan, images, job.base_model, job.vae,
        describe_optimizer(optimizer, config.optimizer_args), seed, time.time(), precision,
        reg_scan,
    )  # fmt: skip
    alphas = model.noise_scheduler.alphas_cumprod
    session = Session(
        config=config, plan=plan, model=model, network=network, images=images,
        latents=cache.latents if cache else None, optimizer=optimizer, scheduler=scheduler,
        snr=all_snr(alphas),
        device=device, autocast_dtype=PRECISION_DTYPES.get(precision),
        scaler=gradient_scaler(device, precision, config.full_fp16),
        seed=seed, output_dir=job.output_dir, metadata=run_metadata(config, facts),
        caption_rng=random.Random(seed), latent_generator=latent_generator, group_names=names,
        augment_rng=augment_rng(seed), flipped_latents=cache.flipped if cache else None,
        cached_alphas=cache.alphas if cache else None,
        train_text_encoder=config.train_text_encoder,
        text_encoder_stop_step=text_encoder_stop(config, scan, reg_scan),
    )  # fmt: skip
    if not finishing:
        cache_text_conditioning(session, reporter, gate, host)
    return session


def cache_text_conditioning(
    s: Session, reporter: Reporter, gate: SetupStop, host: torch.device
) -> None:
    """``sdxl_cache_text_encoder_outputs``: every caption encoded once, kept off the device;
    then the frozen encoders leave it too (``trainer.placement``)."""
    config = s.config
    if config.cache_text_encoder_outputs:
        reporter(PhaseChanged("caching"))
        to_disk = config.cache_text_encoder_outputs_to_disk
        s.text_cache = cache_text_outputs(s, to_disk=to_disk, host=host)
        gate.check()
    if Offload.for_config(config).text_encoders:
        to_host(host, s.model.text_encoder, s.model.text_encoder_2)


def train(
    job: TrainingJob,
    reporter: Reporter = null_reporter,
    stop: StopSignal = never_stop,
    step_hook: StepHook | None = None,
) -> TrainingResult:
    """Train a LoRA for ``job``; files land in ``job.output_dir``.

    With ``job.resume_state`` the run continues exactly where that state was saved. ``stop``
    is polled between setup phases too, not only between steps (see ``StopRequest``)."""
    reporter(PhaseChanged("loading"))
    config = job.config
    resume = read_state_header(job.resume_state) if job.resume_state is not None else None
    if resume is not None:
        check_same_run(resume, config)  # before minutes of loading, for a config mismatch
    setup = SetupStop(stop, resume.position.step if resume is not None else 0)
    setup.check()  # asked while the process started
    scan = scan_dataset(job.data_dir, config.caption_extension)
    reg_scan = None
    if job.reg_data_dir is not None:
        reg_scan = scan_dataset(job.reg_data_dir, config.caption_extension, is_reg=True)
    plan, replanned = reuse_or_plan(job.plan, config, scan, reg_scan)
    if replanned is not None:
        reporter(replanned)
    setup.check()
    if resume is not None:
        seed = resume.seed  # a random seed (seed 0) was drawn once, by the first attempt
    else:
        seed = config.seed if config.seed is not None else random.randint(0, 2**32 - 1)
    seed_everything(seed)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        session = build_session(job, scan, plan, reporter, seed, reg_scan=reg_scan, setup=setup)
        position = None
        if resume is not None and job.resume_state is not None:
            check_same_run(resume, config, session)
            position = restore_training_state(session, job.resume_state, resume)
            reporter(Notice(f"resuming from {job.resume_state.name} at step {position.step}"))
        return run_training(session, reporter, stop, step_hook, position)
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(_oom_message(exc)) from exc


def _oom_message(exc: BaseException) -> str:
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    return (
        f"CUDA out of memory (peak {peak / 2**30:.2f} GiB allocated): {exc}. Reduce it with a "
        "smaller train_batch_size or max_resolution, gradient_checkpointing on, cache_latents on, "
        "AdamW8bit or Adafactor, a lower network_dim, or unet only (text_encoder_lr 0)"
    )
