"""One training micro-step, in diffusers' order: encode, noise, predict, weigh."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from trainer.data.batches import Batch
from trainer.data.captions import process_caption
from trainer.data.latents import encode, pixels_for
from trainer.loss import loss_weights, offset_noise, per_sample_mse, sample_timesteps
from trainer.models.text import chunked_input_ids, encode_text, size_conditioning
from trainer.session import Session


def batch_latents(s: Session, batch: Batch) -> torch.Tensor:
    if s.latents is not None:
        return torch.stack([s.latents[i] for i in batch.images])
    images = [s.images[i] for i in batch.images]
    names = [f"{im.record.folder}/{im.record.path.name}" for im in images]
    pixels = torch.stack([pixels_for(im) for im in images])
    return encode(s.model.vae, pixels, names, s.latent_generator)


def batch_conditioning(s: Session, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Text context, pooled text embedding and size conditioning for a batch."""
    config = s.config
    images = [s.images[i] for i in batch.images]
    captions = [
        process_caption(
            im.record.caption, config.shuffle_caption, config.keep_tokens, s.caption_rng
        )
        for im in images
    ]
    ids_1 = chunked_input_ids(s.model.tokenizer, captions, config.max_token_length)
    ids_2 = chunked_input_ids(s.model.tokenizer_2, captions, config.max_token_length)
    grad = torch.enable_grad() if config.train_text_encoder else torch.no_grad()
    with grad:
        context, pooled = encode_text(
            s.model.text_encoder, s.model.text_encoder_2, ids_1.to(s.device), ids_2.to(s.device)
        )
    time_ids = torch.stack(
        [
            size_conditioning(
                (im.record.size[1], im.record.size[0]),
                im.crop_top_left,
                (im.bucket[1], im.bucket[0]),
            )
            for im in images
        ]
    )
    return context, pooled, time_ids.to(s.device)


def training_loss(s: Session, batch: Batch) -> torch.Tensor:
    """The weighted diffusion loss of one batch (not yet divided for accumulation)."""
    config = s.config
    autocast = (
        torch.autocast(s.device.type, dtype=s.autocast_dtype)
        if s.autocast_dtype is not None
        else nullcontext()
    )
    latents = batch_latents(s, batch).to(s.device)
    with autocast:
        context, pooled, time_ids = batch_conditioning(s, batch)
        noise = torch.randn(latents.shape).to(s.device)
        noise = offset_noise(noise, config.noise_offset, config.noise_offset_random_strength, None)
        timesteps = sample_timesteps(
            latents.shape[0], config.min_timestep, config.max_timestep, None
        ).to(s.device)
        noisy = s.model.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = s.model.unet(
            noisy,
            timesteps,
            encoder_hidden_states=context,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
        ).sample
    loss = per_sample_mse(prediction, noise)
    weights = loss_weights(
        s.snr[timesteps.cpu()].to(s.device), config.min_snr_gamma, config.debiased_estimation_loss
    )
    return (loss * weights).mean()
