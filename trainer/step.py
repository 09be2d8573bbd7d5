"""One training micro-step, in diffusers' order: encode, noise, predict, weigh."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch

from trainer.config.checks import timestep_bounds
from trainer.data.augment import PLAIN, Augmentation, crop_conditioning, draw_augmentation
from trainer.data.batches import Batch
from trainer.data.captions import drops_caption, process_caption
from trainer.data.latents import draw_noise, encode, pixels_for
from trainer.data.masks import batch_masks
from trainer.data.text_cache import (
    DiskTextCache,
    TextOutputs,
    disk_path,
    host_rows,
    is_cached,
    rows_per_block,
    text_fingerprint,
    write_outputs,
)
from trainer.loss import (
    huber_c,
    input_perturbation,
    loss_weights,
    multires_noise,
    offset_noise,
    per_sample_loss,
    prior_weights,
    sample_timesteps,
    velocity,
)
from trainer.models.text import chunked_input_ids, encode_text, size_conditioning
from trainer.placement import HOST
from trainer.session import Session


def batch_augmentations(s: Session, batch: Batch) -> list[Augmentation]:
    """Each sample's flip / crop / colour draw, shared by its pixels and its conditioning."""
    return [draw_augmentation(s.images[i], s.config, s.augment_rng) for i in batch.images]


def batch_latents(
    s: Session, batch: Batch, augmentations: list[Augmentation] | None = None
) -> torch.Tensor:
    augmentations = augmentations or [PLAIN] * len(batch.images)
    if s.latents is not None:
        chosen = []
        for index, augmentation in zip(batch.images, augmentations, strict=True):
            cache = s.flipped_latents if augmentation.flipped else s.latents
            assert cache is not None, "flip_aug caches the mirrored latents too"
            chosen.append(cache[index])
        return torch.stack(chosen)
    images = [s.images[i] for i in batch.images]
    names = [f"{im.record.folder}/{im.record.path.name}" for im in images]
    pixels = torch.stack([pixels_for(im, a) for im, a in zip(images, augmentations, strict=True)])
    noise = draw_noise(s.model.vae, [im.bucket for im in images], s.latent_generator)
    return encode(s.model.vae, pixels, names, noise)


def batch_captions(s: Session, batch: Batch, epoch: int) -> list[str]:
    """Each sample's caption after dropout and tag shuffling, in the order of sd-scripts
    ``library/train_util.py``: ``BaseDataset.process_caption``."""
    config = s.config
    captions = []
    for index in batch.images:
        caption = s.images[index].record.caption
        rate, every = config.caption_dropout_rate, config.caption_dropout_every_n_epochs
        if drops_caption(rate, every, epoch, s.caption_rng):
            caption = ""
        captions.append(
            process_caption(caption, config.shuffle_caption, config.keep_tokens, s.caption_rng)
        )
    return captions


def encode_captions(s: Session, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Text context (B, L+2, 2048) and pooled embedding (B, 1280) of both encoders."""
    length = s.config.max_token_length
    ids_1 = chunked_input_ids(s.model.tokenizer, captions, length)
    ids_2 = chunked_input_ids(s.model.tokenizer_2, captions, length)
    grad = torch.enable_grad() if s.train_text_encoder else torch.no_grad()
    with grad:
        return encode_text(
            s.model.text_encoder, s.model.text_encoder_2, ids_1.to(s.device), ids_2.to(s.device)
        )


@torch.no_grad()
def cache_text_outputs(
    s: Session, *, to_disk: bool = False, host: torch.device = HOST
) -> Sequence[TextOutputs]:
    """sdxl_cache_text_encoder_outputs: each image's fixed caption encoded once, kept in
    ``host`` memory or, ``to_disk``, in a file beside the image (``trainer.data.text_cache``).

    Only valid when no text encoder trains and captions never change (no shuffle,
    no dropout): the config rules guarantee both.
    """
    if to_disk:
        return _cache_text_outputs_on_disk(s)
    cached: list[TextOutputs] = []
    pending: list[TextOutputs] = []
    with _autocast(s):
        for image in s.images:
            context, pooled = encode_captions(s, [image.record.caption])
            pending.append((context[0], pooled[0]))
            if len(pending) == rows_per_block(context[0]):
                cached += host_rows(pending, s.device, host)
                pending = []
    return cached + host_rows(pending, s.device, host)


def _cache_text_outputs_on_disk(s: Session) -> DiskTextCache:
    encoders = (s.model.text_encoder, s.model.text_encoder_2)
    fingerprint = text_fingerprint(encoders, s.config.max_token_length, s.autocast_dtype)
    paths = [disk_path(image.record.path, fingerprint) for image in s.images]
    with _autocast(s):
        for image, path in zip(s.images, paths, strict=True):
            caption = image.record.caption
            if not is_cached(path, caption):  # a repeated image finds its first copy's file
                context, pooled = encode_captions(s, [caption])
                write_outputs(path, caption, context[0], pooled[0])
    return DiskTextCache(paths)


def batch_conditioning(
    s: Session, batch: Batch, epoch: int = 1, augmentations: list[Augmentation] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Text context, pooled text embedding and size conditioning for a batch."""
    images = [s.images[i] for i in batch.images]
    augmentations = augmentations or [PLAIN] * len(images)
    if s.text_cache is not None:  # host memory or disk: only the batch's come to the device
        cached = [s.text_cache[i] for i in batch.images]
        context = torch.stack([c.to(s.device, non_blocking=True) for c, _ in cached])
        pooled = torch.stack([p.to(s.device, non_blocking=True) for _, p in cached])
    else:
        context, pooled = encode_captions(s, batch_captions(s, batch, epoch))
    time_ids = torch.stack(
        [
            size_conditioning(
                (im.record.size[1], im.record.size[0]),
                crop_conditioning(im, augmentation),
                (im.bucket[1], im.bucket[0]),
            )
            for im, augmentation in zip(images, augmentations, strict=True)
        ]
    )
    return context, pooled, time_ids.to(s.device)


def _autocast(s: Session) -> AbstractContextManager[object]:
    if s.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(s.device.type, dtype=s.autocast_dtype)


def training_noise(s: Session, latents: torch.Tensor) -> torch.Tensor:
    """epsilon with the noise offset (adaptive if asked), then pyramid noise, as sd-scripts
    ``library/train_util.py``: ``get_noise_noisy_latents_and_timesteps``."""
    config = s.config
    noise = torch.randn(latents.shape).to(s.device)
    noise = offset_noise(
        noise, config.noise_offset, config.noise_offset_random_strength, None,
        latents=latents, adaptive_scale=config.adaptive_noise_scale,
    )  # fmt: skip
    return multires_noise(
        noise, config.multires_noise_iterations, config.multires_noise_discount, None
    )


def sample_weights(s: Session, batch: Batch, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR-based weights (sd-scripts ``library/custom_train_functions.py``) times the prior
    weight of regularization images."""
    config = s.config
    weights = loss_weights(
        s.snr[timesteps.cpu()],
        config.min_snr_gamma,
        config.debiased_estimation_loss,
        v_prediction=config.v_parameterization,
        scale_v_pred_like_noise_pred=config.scale_v_pred_loss_like_noise_pred,
        v_pred_like_loss=config.v_pred_like_loss,
    )
    is_reg = [s.images[i].record.is_reg for i in batch.images]
    return (weights * prior_weights(is_reg, config.prior_loss_weight)).to(s.device)


def training_loss(s: Session, batch: Batch, epoch: int = 1) -> torch.Tensor:
    """The weighted diffusion loss of one batch (not yet divided for accumulation)."""
    config = s.config
    augmentations = batch_augmentations(s, batch)
    latents = batch_latents(s, batch, augmentations).to(s.device)
    scheduler = s.model.noise_scheduler
    with _autocast(s):
        context, pooled, time_ids = batch_conditioning(s, batch, epoch, augmentations)
        noise = training_noise(s, latents)
        timesteps = sample_timesteps(latents.shape[0], *timestep_bounds(config), None).to(s.device)
        perturbed = input_perturbation(
            noise, config.ip_noise_gamma, config.ip_noise_gamma_random_strength, None
        )
        noisy = scheduler.add_noise(latents, perturbed, timesteps)
        prediction = s.model.unet(
            noisy,
            timesteps,
            encoder_hidden_states=context,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
        ).sample
    if config.v_parameterization:
        target = velocity(latents, noise, scheduler.alphas_cumprod[timesteps.cpu()])
    else:
        target = noise
    loss = prediction_loss(s, batch, prediction, target, timesteps, augmentations)
    return (loss * sample_weights(s, batch, timesteps)).mean()


def prediction_loss(
    s: Session,
    batch: Batch,
    prediction: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    augmentations: list[Augmentation],
) -> torch.Tensor:
    """Each sample's loss, in ``train_network.py: NetworkTrainer.train``'s order: the
    element loss of ``loss_type`` (Huber c from each sample's timestep), the alpha mask
    with ``masked_loss``, the mean over (C, H, W)."""
    config = s.config
    c = None
    if config.loss_type != "l2":
        alphas = s.model.noise_scheduler.alphas_cumprod
        c = huber_c(timesteps, config.huber_schedule, config.huber_c, alphas)
    mask = None
    if config.masked_loss:
        kept = s.cached_alphas
        cached = [kept[i] for i in batch.images] if kept is not None else None
        mask = batch_masks([s.images[i] for i in batch.images], augmentations, cached)
    return per_sample_loss(prediction, target, config.loss_type, c, mask)
