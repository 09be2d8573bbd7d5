"""Render one sample image with the LoRA live, through diffusers' SDXL pipeline.

The pipeline is assembled from the session's already-loaded components (no
weights are copied; ``samples.sample_if_due`` has brought any part the run keeps on
the host to the device), so the peft LoRA layers injected for training take part
exactly as they are. Three things keep sampling from touching the
training run:

* every module of the UNet and text encoders is put in eval mode and given its
  own mode back afterwards: dropout, and Kohya's LoRA dropouts (forward hooks
  in ``trainer.lora.regularizers`` that act only while ``module.training``);
* the noise comes from a dedicated ``torch.Generator`` per image, and anything
  drawing on the global generators runs inside ``torch.random.fork_rng``, so
  training's random stream continues as if nothing had been sampled;
* everything runs under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image

from trainer.models.text import chunked_input_ids, encode_text
from trainer.sampling.prompts import SamplePrompt
from trainer.sampling.schedulers import build_sampler
from trainer.session import Session


@contextmanager
def eval_mode(*roots: torch.nn.Module) -> Iterator[None]:
    """Every module under ``roots`` in eval mode; each one's own mode restored after."""
    modes = [(module, module.training) for root in roots for module in root.modules()]
    for root in roots:
        root.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Save the global CPU (and this CUDA device's) RNG state, restore it on exit."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def prompt_embeddings(s: Session, prompt: SamplePrompt) -> dict[str, torch.Tensor]:
    """The pipeline's embedding arguments, encoded as training encodes captions.

    Kohya's chunked encoding up to ``max_token_length`` (diffusers' own encoder
    would cut prompts at 77 tokens), and an empty negative prompt is encoded
    like any other text, as sd-scripts' SDXL sampler does.
    """
    texts = [prompt.prompt, prompt.negative_prompt]
    length = s.config.max_token_length
    ids_1 = chunked_input_ids(s.model.tokenizer, texts, length).to(s.device)
    ids_2 = chunked_input_ids(s.model.tokenizer_2, texts, length).to(s.device)
    with _autocast(s):
        context, pooled = encode_text(s.model.text_encoder, s.model.text_encoder_2, ids_1, ids_2)
    return {
        "prompt_embeds": context[:1],
        "pooled_prompt_embeds": pooled[:1],
        "negative_prompt_embeds": context[1:],
        "negative_pooled_prompt_embeds": pooled[1:],
    }


def sdxl_pipeline(s: Session, sampler: str) -> Any:
    """The SDXL pipeline over the session's own modules (Any: diffusers' lazy imports
    leave the pipeline untyped for mypy)."""
    model = s.model
    scheduler = build_sampler(
        sampler, model.noise_scheduler.config, v_prediction=s.config.v_parameterization
    )
    pipeline: Any = StableDiffusionXLPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer,
        tokenizer_2=model.tokenizer_2,
        unet=model.unet,
        scheduler=scheduler,
        add_watermarker=False,  # the invisible watermark would alter the pixels users compare
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.no_grad()
def render(s: Session, prompt: SamplePrompt, sampler: str, seed: int) -> Image.Image:
    """One image for ``prompt``; call inside ``eval_mode`` and ``isolated_rng``."""
    torch.manual_seed(seed)  # anything in diffusers that draws on the global RNG, seeded too
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same noise on any device
    pipeline = sdxl_pipeline(s, sampler)
    try:
        with _autocast(s):
            latents = pipeline(
                **prompt_embeddings(s, prompt),
                width=prompt.width,
                height=prompt.height,
                num_inference_steps=prompt.steps,
                guidance_scale=prompt.scale,
                generator=generator,
                output_type="latent",
            ).images
        pixels = decode(s.model.vae, latents)
        images: list[Image.Image] = pipeline.image_processor.postprocess(pixels, output_type="pil")
        return images[0]
    finally:
        del pipeline


def decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents to pixels in [-1, 1], outside autocast: the SDXL VAE overflows in fp16,
    which is also why training keeps it in fp32."""
    latents = latents.to(vae.device, torch.float32) / vae.config.scaling_factor
    pixels: torch.Tensor = vae.decode(latents).sample
    return pixels


def _autocast(s: Session) -> AbstractContextManager[object]:
    # The training step's precision: the frozen weights are in the training dtype.
    if s.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(s.device.type, dtype=s.autocast_dtype)
