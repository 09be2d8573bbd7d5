"""Loading a trained LoRA the way users do (diffusers' load_lora_weights) on the miniature SDXL."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline

from trainer.models.configs import config_dir_for
from trainer.models.tokenizers import build_sdxl_tokenizers


def unet_output_before_and_after(
    base_model: Path, lora: Path
) -> tuple[StableDiffusionXLPipeline, torch.Tensor, torch.Tensor]:
    """The pipeline with the LoRA loaded, and its UNet's output on fixed inputs without and with
    the LoRA."""
    tok1, tok2 = build_sdxl_tokenizers()
    pipe = StableDiffusionXLPipeline.from_single_file(
        str(base_model), config=str(config_dir_for(base_model)), local_files_only=True,
        tokenizer=tok1, tokenizer_2=tok2,
    )  # fmt: skip
    torch.manual_seed(0)
    sample, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    context, pooled = torch.randn(1, 77, 96), torch.randn(1, 64)
    cond = {"text_embeds": pooled, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    with torch.no_grad():
        before = pipe.unet(sample, t, context, added_cond_kwargs=cond).sample
        pipe.load_lora_weights(str(lora))
        after = pipe.unet(sample, t, context, added_cond_kwargs=cond).sample
    return pipe, before, after
