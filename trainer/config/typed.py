# Generated from the registry by `python -m trainer.config.table`; do not edit by hand.
"""The fields of ``TrainingConfig`` as mypy sees them.

:mod:`trainer.config.model` builds ``TrainingConfig`` from the registry when it is
imported; mypy cannot see a class made at run time, so it reads this one, which
lists the same fields (:mod:`trainer.config.fields`). A test fails when the two
differ. The package never imports this module at run time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class TrainingConfig(BaseModel, frozen=True, extra="forbid"):
    """A validated SDXL LoRA training config (see the registry for each field's meaning)."""

    pretrained_model_name_or_path: str
    vae: str | None
    output_name: str
    network_weights: str | None
    training_comment: str
    metadata_title: str | None
    metadata_author: str | None
    metadata_description: str | None
    metadata_license: str | None
    metadata_tags: str | None
    resolution: tuple[int, int]
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    caption_extension: str
    shuffle_caption: bool
    keep_tokens: int
    max_token_length: int
    clip_skip: int
    train_batch_size: int
    epochs: int
    max_train_epochs: int | None
    max_train_steps: int | None
    gradient_accumulation_steps: int
    seed: int | None
    lora_type: str
    network_dim: int
    network_alpha: float
    learning_rate: float
    unet_lr: float
    text_encoder_lr: float
    optimizer: str
    optimizer_args: dict[str, Any]
    max_grad_norm: float
    lr_scheduler: str
    lr_scheduler_args: dict[str, Any]
    lr_scheduler_num_cycles: int
    lr_scheduler_power: float
    lr_warmup_percent: float
    lr_warmup_steps: int | None
    noise_offset_type: str
    noise_offset: float
    noise_offset_random_strength: bool
    min_snr_gamma: float | None
    debiased_estimation_loss: bool
    min_timestep: int
    max_timestep: int | None
    loss_type: str
    mixed_precision: str
    save_precision: str
    gradient_checkpointing: bool
    cache_latents: bool
    cache_latents_to_disk: bool
    no_half_vae: bool
    save_every_n_epochs: int | None
    v_parameterization: bool
    scale_v_pred_loss_like_noise_pred: bool
    v_pred_like_loss: float
    multires_noise_iterations: int
    multires_noise_discount: float
    ip_noise_gamma: float
    ip_noise_gamma_random_strength: bool
    adaptive_noise_scale: float
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
    cache_text_encoder_outputs_to_disk: bool
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
    huber_c: float
    huber_schedule: str
    masked_loss: bool
    vae_batch_size: int
    max_data_loader_n_workers: int
    persistent_data_loader_workers: bool
    lycoris_preset: str
    bypass_mode: bool
    constrain: float
    decompose_both: bool
    dora_wd: bool
    factor: int
    rank_dropout_scale: bool
    rescaled: bool
    train_norm: bool
    train_on_input: bool
    use_cp: bool
    use_scalar: bool
    use_tucker: bool
    unit: int
    dim_from_weights: bool
    down_lr_weight: str
    mid_lr_weight: str
    up_lr_weight: str
    block_lr_zero_threshold: str
    block_dims: str
    block_alphas: str
    conv_block_dims: str
    conv_block_alphas: str
    train_unet: bool
    train_text_encoder: bool
