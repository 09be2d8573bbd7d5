"""``TrainingConfig``: the frozen, typed, validated config the trainer reads.

Internal names follow sd-scripts where it has one name per idea; Kohya GUI
spellings live only in the registry. Ranges and choices come from the registry
(``KEYS``), so the payload edge and this model cannot disagree. Every field is
required: a config is made by :func:`trainer.config.parse_payload` (which fills
the Kohya defaults) or by ``model_validate`` of its own ``model_dump``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from trainer.config.arguments import freeze
from trainer.config.checks import cross_field_problems, range_problems


class TrainingConfig(BaseModel):
    """A validated SDXL LoRA training config (see the registry for each field's meaning)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Model, identity, metadata
    pretrained_model_name_or_path: str
    vae: str | None
    network_weights: str | None
    output_name: str
    training_comment: str
    clip_skip: int
    metadata_title: str | None
    metadata_author: str | None
    metadata_description: str | None
    metadata_license: str | None
    metadata_tags: str | None
    # Network and learning rates (effective: fallbacks applied; 0.0 = part not trained)
    lora_type: str
    network_dim: int
    network_alpha: float
    train_unet: bool
    train_text_encoder: bool
    learning_rate: float
    unet_lr: float
    text_encoder_lr: float
    # Optimizer and schedule
    optimizer: Literal["AdamW", "AdamW8bit", "Lion", "Lion8bit", "Adafactor", "Prodigy"]
    optimizer_args: dict[str, Any]
    max_grad_norm: float
    lr_scheduler: Literal[
        "constant",
        "constant_with_warmup",
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "adafactor",
    ]
    lr_scheduler_args: dict[str, Any]
    lr_warmup_percent: float
    lr_warmup_steps: int | None
    lr_scheduler_num_cycles: int
    lr_scheduler_power: float
    # Steps
    train_batch_size: int
    epochs: int
    max_train_epochs: int | None
    max_train_steps: int | None
    gradient_accumulation_steps: int
    seed: int | None
    # Dataset, captions, buckets
    resolution: tuple[int, int]
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    caption_extension: str
    shuffle_caption: bool
    keep_tokens: int
    max_token_length: Literal[75, 150, 225]
    cache_latents: bool
    cache_latents_to_disk: bool
    # Precision and memory
    mixed_precision: Literal["no", "fp16", "bf16"]
    save_precision: Literal["float", "fp16", "bf16"]
    gradient_checkpointing: bool
    no_half_vae: bool
    # Noise, timesteps, loss
    noise_offset_type: str
    noise_offset: float
    noise_offset_random_strength: bool
    min_snr_gamma: float | None
    debiased_estimation_loss: bool
    min_timestep: int
    max_timestep: int
    loss_type: str
    # Saving
    save_every_n_epochs: int | None
    # The rest of the training surface (keys_more.TRAINING_MORE)
    multires_noise_iterations: int
    multires_noise_discount: float
    ip_noise_gamma: float
    ip_noise_gamma_random_strength: bool
    adaptive_noise_scale: float
    v_parameterization: bool
    scale_v_pred_loss_like_noise_pred: bool
    v_pred_like_loss: float
    caption_dropout_rate: float
    caption_dropout_every_n_epochs: int | None
    flip_aug: bool
    color_aug: bool
    random_crop: bool
    full_fp16: bool
    full_bf16: bool
    fp8_base: bool
    network_dropout: float
    rank_dropout: float
    module_dropout: float
    scale_weight_norms: float | None
    stop_text_encoder_training_pct: int
    cache_text_encoder_outputs: bool
    prior_loss_weight: float
    save_every_n_steps: int | None
    save_last_n_steps: int | None
    save_last_n_steps_state: int | None
    save_state: bool
    save_state_on_train_end: bool
    sample_every_n_epochs: int | None
    sample_every_n_steps: int | None
    sample_prompts: str
    sample_sampler: str
    conv_dim: int
    conv_alpha: float
    # VAE batch of latent caching (honoured); then throughput-only host keys
    vae_batch_size: int
    max_data_loader_n_workers: int
    persistent_data_loader_workers: bool

    @field_validator("optimizer_args", "lr_scheduler_args", mode="after")
    @classmethod
    def _stable_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        # JSON turns tuples into lists; freezing again makes dump/validate a round trip.
        return {name: freeze(v, name) for name, v in value.items()}

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        problems = range_problems(self) or cross_field_problems(self)
        if problems:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))
        return self
