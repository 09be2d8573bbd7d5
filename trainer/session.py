"""Everything one training run holds, prepared once before the loop starts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.config import TrainingConfig
from trainer.data.batches import TrainingImage
from trainer.lora.network import LoraNetwork
from trainer.models.loading import SdxlModel
from trainer.plan import TrainingPlan


@dataclass
class Session:
    config: TrainingConfig
    plan: TrainingPlan
    model: SdxlModel
    network: LoraNetwork
    images: list[TrainingImage]
    latents: list[torch.Tensor] | None  # cached latents, one per image, or None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    snr: torch.Tensor  # SNR per training timestep
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: full fp32
    scaler: torch.amp.GradScaler  # enabled for fp16 and full_fp16 (trainer.scaling)
    seed: int
    output_dir: Path
    metadata: dict[str, str]
    caption_rng: random.Random = field(default_factory=random.Random)
    latent_generator: torch.Generator = field(default_factory=torch.Generator)
    augment_rng: random.Random = field(default_factory=random.Random)  # flip/colour/crop draws
    group_names: list[str] = field(default_factory=list)
    train_text_encoder: bool = False  # False once stop_text_encoder_training_pct is reached
    text_encoder_stop_step: int | None = None  # optimizer step after which the TE LoRA freezes
    # (context, pooled) per image, in host memory or on disk (trainer.data.text_cache)
    text_cache: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
    flipped_latents: list[torch.Tensor] | None = None  # flip_aug: cached latents of the mirrors
    # masked_loss with cached latents: each image's uint8 alpha, kept (trainer.data.masks)
    cached_alphas: list[torch.Tensor | None] | None = None
