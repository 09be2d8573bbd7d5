"""Load an SDXL base model offline: single-file original layout or a diffusers folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import SingleFileComponentError
from safetensors import SafetensorError, safe_open
from transformers import CLIPTokenizer

from trainer.errors import BaseModelError
from trainer.models.configs import config_dir_for
from trainer.models.tokenizers import build_sdxl_tokenizers

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# What diffusers raises for a checkpoint whose tensors don't fit the configs
# (a truncated or foreign file): the user's model is wrong, not our code.
LOAD_ERRORS = (
    OSError, ValueError, KeyError, RuntimeError, SafetensorError, SingleFileComponentError,
)  # fmt: skip


@dataclass
class SdxlModel:
    # diffusers and transformers models are typed loosely upstream (lazy imports,
    # wrapped ``to``); Any keeps mypy honest about what it cannot check.
    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    tokenizer: CLIPTokenizer
    tokenizer_2: CLIPTokenizer
    noise_scheduler: Any


def training_noise_scheduler() -> DDPMScheduler:
    """SDXL's DDPM schedule: scaled-linear betas 0.00085..0.012 over 1000 steps."""
    return DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
    )


def check_safetensors(path: Path, what: str) -> None:
    """Refuse pickle formats and unreadable files before diffusers sees them."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BaseModelError(
            f"{what} {path.name!r} is a pickle file ({path.suffix}); pickles can run code when "
            "loaded, so only .safetensors is accepted: convert it first"
        )
    if not path.exists():
        raise BaseModelError(f"{what} {path.name!r} does not exist")
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as handle:
                if not list(handle.keys()):
                    raise BaseModelError(f"{what} {path.name!r} holds no tensors")
        except (SafetensorError, OSError) as exc:
            raise BaseModelError(
                f"{what} {path.name!r} is not a readable safetensors file: {exc}"
            ) from exc


def load_sdxl(base: Path, base_config: Path | None = None, vae: Path | None = None) -> SdxlModel:
    """Load all SDXL components in fp32 on the CPU (the caller moves and casts)."""
    check_safetensors(base, "base model")
    tokenizer, tokenizer_2 = build_sdxl_tokenizers()
    try:
        if base.is_dir():
            pipe = StableDiffusionXLPipeline.from_pretrained(
                str(base), local_files_only=True, tokenizer=tokenizer, tokenizer_2=tokenizer_2
            )
        else:
            pipe = StableDiffusionXLPipeline.from_single_file(
                str(base),
                config=str(config_dir_for(base, base_config)),
                local_files_only=True,
                tokenizer=tokenizer,
                tokenizer_2=tokenizer_2,
            )
    except LOAD_ERRORS as exc:
        raise BaseModelError(f"base model {base.name!r} could not be loaded: {exc}") from exc
    model_vae = pipe.vae if vae is None else _load_vae(vae, config_dir_for(base, base_config))
    return SdxlModel(
        unet=pipe.unet,
        vae=model_vae,
        text_encoder=pipe.text_encoder,
        text_encoder_2=pipe.text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        noise_scheduler=training_noise_scheduler(),
    )


def _load_vae(path: Path, config_dir: Path) -> AutoencoderKL:
    check_safetensors(path, "VAE")
    try:
        if path.is_dir():
            return AutoencoderKL.from_pretrained(str(path), local_files_only=True)
        return AutoencoderKL.from_single_file(
            str(path), config=str(config_dir), subfolder="vae", local_files_only=True
        )
    except LOAD_ERRORS as exc:
        raise BaseModelError(f"VAE {path.name!r} could not be loaded: {exc}") from exc
