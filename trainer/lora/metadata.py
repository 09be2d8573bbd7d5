"""``ss_*`` and ``modelspec.*`` metadata as sd-scripts writes it.

Sources: sd-scripts ``train_network.py: NetworkTrainer.train`` (the ``ss_*`` keys) and
``library/sai_model_spec.py: build_metadata`` (``modelspec.*``); what lorabox writes
differently is in docs/kohya-semantics.md, "Metadata".
Values are strings, as in sd-scripts. Nothing secret and no absolute path is
written: model names are file names, dataset folders are folder names.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from trainer.config import TrainingConfig
from trainer.config.checks import timestep_bounds
from trainer.data.batches import TrainingImage, bucket_counts
from trainer.data.folders import DatasetScan
from trainer.lora.gui_args import LOCON, STANDARD, gui_items, net_kwargs, network_module
from trainer.plan import TrainingPlan

BASE_MODEL_VERSION = "sdxl_base_v1-0"
ARCHITECTURE = "stable-diffusion-xl-v1-base/lora"


@dataclass(frozen=True)
class RunFacts:
    """What the metadata needs beyond the config: measured once at start."""

    plan: TrainingPlan
    scan: DatasetScan
    images: list[TrainingImage]
    base_model: Path
    vae: Path | None
    optimizer: str
    seed: int
    started_at: float
    mixed_precision: str  # the precision actually used (after any CPU fallback)
    reg_scan: DatasetScan | None = None  # the regularization set, if any


def legacy_model_hash(path: Path) -> str:
    """A1111's old hash: SHA-256 of 64 KiB at offset 1 MiB, first 8 hex digits."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0x100000)
        return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]


def file_sha256(path: Path) -> str:
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tag_frequency(scan: DatasetScan) -> dict[str, dict[str, int]]:
    frequency: dict[str, Counter[str]] = {}
    for record in scan.images:
        tags = [t.strip().lower() for t in record.caption.split(",") if t.strip()]
        frequency.setdefault(record.folder, Counter()).update(tags)
    return {folder: dict(counter) for folder, counter in frequency.items()}


def _bucket_info(config: TrainingConfig, images: list[TrainingImage]) -> str:
    """sd-scripts ``BaseDataset.make_buckets``: the used buckets in sorted order (its
    ``BucketManager.resos`` holds only buckets an image selected, predefined or not) and the
    mean |bucket ar − image ar| over the images without repeats; ``null`` without bucketing."""
    if not config.enable_bucket:
        return json.dumps(None)
    buckets = {
        str(i): {"resolution": list(bucket), "count": count}
        for i, (bucket, count) in enumerate(bucket_counts(images).items())
    }
    errors = [im.bucket[0] / im.bucket[1] - im.record.size[0] / im.record.size[1] for im in images]
    # numpy's mean (pairwise summation), as sd-scripts takes it, to the last digit.
    mean = float(np.mean(np.abs(np.array(errors)))) if errors else 0.0
    return json.dumps({"buckets": buckets, "mean_img_ar_error": mean})


def _given(value: float | None) -> int | float | None:
    """A number as a GUI payload gives it and sd-scripts writes it back (``str(args.x)``):
    whole numbers without ``.0`` (the GUI saves ``16``, not ``16.0``)."""
    if value is None or not float(value).is_integer():
        return value
    return int(value)


def _dirs(scan: DatasetScan | None) -> str:
    folders = scan.folders if scan is not None else ()
    return json.dumps(
        {f.name: {"n_repeats": f.repeats, "img_count": f.image_count} for f in folders}
    )


def _dataset_fields(config: TrainingConfig, facts: RunFacts) -> dict[str, object]:
    return {
        "ss_batch_size_per_device": config.train_batch_size,
        "ss_total_batch_size": config.train_batch_size * config.gradient_accumulation_steps,
        "ss_resolution": str(tuple(config.resolution)),
        "ss_color_aug": config.color_aug,
        "ss_flip_aug": config.flip_aug,
        "ss_random_crop": config.random_crop,
        "ss_shuffle_caption": config.shuffle_caption,
        "ss_enable_bucket": config.enable_bucket,
        "ss_bucket_no_upscale": config.bucket_no_upscale,
        "ss_min_bucket_reso": config.min_bucket_reso,
        "ss_max_bucket_reso": config.max_bucket_reso,
        "ss_keep_tokens": config.keep_tokens,
        "ss_dataset_dirs": _dirs(facts.scan),
        "ss_reg_dataset_dirs": _dirs(facts.reg_scan),
        "ss_tag_frequency": json.dumps(_tag_frequency(facts.scan)),
        "ss_bucket_info": _bucket_info(config, facts.images),
    }


def _training_fields(config: TrainingConfig, facts: RunFacts) -> dict[str, object]:
    plan = facts.plan
    return {
        "ss_session_id": random.randint(0, 2**32),
        "ss_training_started_at": facts.started_at,
        "ss_output_name": config.output_name,
        "ss_learning_rate": _given(config.learning_rate),
        "ss_text_encoder_lr": _given(config.text_encoder_lr) if config.train_text_encoder else None,
        "ss_unet_lr": _given(config.unet_lr) if config.train_unet else None,
        "ss_num_train_images": plan.images_x_repeats,
        "ss_num_reg_images": sum(i.record.repeats for i in facts.images if i.record.is_reg),
        "ss_num_batches_per_epoch": plan.batches_per_epoch,
        "ss_num_epochs": plan.epochs,
        "ss_gradient_checkpointing": config.gradient_checkpointing,
        "ss_gradient_accumulation_steps": config.gradient_accumulation_steps,
        "ss_max_train_steps": plan.total_steps,
        "ss_lr_warmup_steps": plan.warmup_steps,
        "ss_lr_scheduler": _scheduler(config),
        "ss_network_module": network_module(config.lora_type),
        "ss_network_dim": config.network_dim,
        "ss_network_alpha": _given(config.network_alpha),
        "ss_network_dropout": _given(config.network_dropout or None),
        "ss_mixed_precision": facts.mixed_precision,
        "ss_full_fp16": config.full_fp16,
        "ss_v2": False,
        "ss_base_model_version": BASE_MODEL_VERSION,
        "ss_clip_skip": config.clip_skip,
        "ss_max_token_length": config.max_token_length,
        "ss_cache_latents": config.cache_latents,
        "ss_seed": facts.seed,
        "ss_lowram": False,
        "ss_noise_offset": _given(config.noise_offset or None),
        "ss_multires_noise_iterations": config.multires_noise_iterations or None,
        "ss_multires_noise_discount": _given(config.multires_noise_discount),
        "ss_adaptive_noise_scale": _given(config.adaptive_noise_scale or None),
        "ss_zero_terminal_snr": False,
        "ss_training_comment": config.training_comment or None,
        "ss_sd_scripts_commit_hash": "lorabox",
        "ss_optimizer": facts.optimizer,
        "ss_max_grad_norm": _given(config.max_grad_norm),
        # Unset (0) in the GUI means sd-scripts' argparse defaults 0.0, 0 and 0.0.
        "ss_caption_dropout_rate": _given(config.caption_dropout_rate) or 0.0,
        "ss_caption_dropout_every_n_epochs": config.caption_dropout_every_n_epochs or 0,
        "ss_caption_tag_dropout_rate": 0.0,
        "ss_face_crop_aug_range": None,
        "ss_prior_loss_weight": _given(config.prior_loss_weight),
        "ss_min_snr_gamma": _given(config.min_snr_gamma),
        "ss_scale_weight_norms": _given(config.scale_weight_norms or None),
        "ss_ip_noise_gamma": _given(config.ip_noise_gamma or None),
        "ss_debiased_estimation": config.debiased_estimation_loss,
        "ss_noise_offset_random_strength": config.noise_offset_random_strength,
        "ss_ip_noise_gamma_random_strength": config.ip_noise_gamma_random_strength,
        "ss_loss_type": config.loss_type,
        "ss_huber_schedule": config.huber_schedule,
        "ss_huber_c": _given(config.huber_c),
    }


def _scheduler(config: TrainingConfig) -> str:
    """sd-scripts' ``args.lr_scheduler`` after ``get_optimizer``: Adafactor's relative step
    renames it ``adafactor:<learning_rate>``."""
    if config.lr_scheduler == "adafactor":
        return f"adafactor:{_given(config.learning_rate)}"
    return config.lr_scheduler


def network_args(config: TrainingConfig) -> dict[str, object]:
    """``ss_network_args``: the ``network_args`` kohya_ss passes for this type, as sd-scripts
    keeps them (``trainer.lora.gui_args``). Standard and Kohya LoCon leave out the
    ``dropout`` entry sd-scripts' LyCORIS workaround adds (docs/kohya-semantics.md,
    "Metadata"); every other type records it as sd-scripts does."""
    items = gui_items(config)
    if not items:  # train_network.py writes ss_network_args only when network_args were given
        return {}
    return dict(items) if config.lora_type in (STANDARD, LOCON) else net_kwargs(config)


def _network_fields(config: TrainingConfig) -> dict[str, object]:
    fields: dict[str, object] = {"ss_fp8_base": config.fp8_base}  # SS-main writes it
    args = network_args(config)
    if args:  # sd-scripts writes ss_network_args only when there are any
        fields["ss_network_args"] = json.dumps(args)
    return fields


def _model_fields(facts: RunFacts) -> dict[str, object]:
    fields: dict[str, object] = {
        "ss_sd_model_name": facts.base_model.name,
        "ss_sd_model_hash": legacy_model_hash(facts.base_model),
        "ss_new_sd_model_hash": file_sha256(facts.base_model),
    }
    if facts.vae is not None:
        fields.update(
            ss_vae_name=facts.vae.name,
            ss_vae_hash=legacy_model_hash(facts.vae),
            ss_new_vae_hash=file_sha256(facts.vae),
        )
    return fields


def _modelspec(config: TrainingConfig, started: float) -> dict[str, str]:
    width, height = config.resolution
    spec = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURE,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": config.metadata_title or config.output_name,
        "modelspec.date": datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.prediction_type": "v" if config.v_parameterization else "epsilon",
        "modelspec.encoder_layer": str(config.clip_skip),
    }
    # sd-scripts get_sai_model_spec: whenever either is passed; the GUI drops a 0 but always
    # passes its max_timestep (1000 by default), so a GUI run's file says "0,1000".
    if config.min_timestep != 0 or config.max_timestep is not None:
        low, high = timestep_bounds(config)
        spec["modelspec.timestep_range"] = f"{low},{high}"
    for key in ("author", "description", "license", "tags"):
        value = getattr(config, f"metadata_{key}")
        if value:
            spec[f"modelspec.{key}"] = value
    return spec


def run_metadata(config: TrainingConfig, facts: RunFacts) -> dict[str, str]:
    """Metadata common to every file of the run (``ss_steps``/``ss_epoch`` added per save)."""
    fields = {
        **_training_fields(config, facts),
        **_network_fields(config),
        **_dataset_fields(config, facts),
        **_model_fields(facts),
    }
    return {**{k: str(v) for k, v in fields.items()}, **_modelspec(config, facts.started_at)}
