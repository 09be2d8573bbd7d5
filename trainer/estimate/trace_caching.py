"""Trace the latent-caching phase at full SDXL size on a CPU: its peak memory by part.

    python -m trainer.estimate.trace_caching --payload tests/data/pdxl-kohya-config.json

What ``trainer.run.build_session`` holds while ``cache_image_latents`` runs: the model as
``prepare_model`` left it, on the device only what it placed there (the fp32 VAE; the
parts in ``trainer.run.steps_parts`` wait for ``place_for_steps``, after caching), no
network nor optimizer yet, and the VAE encoding one ``vae_batch_size`` batch of the
largest bucket with the trainer's own ``trainer.data.latents.encode`` (fp32, ``no_grad``).
Fake tensors, as in :mod:`trainer.estimate.trace`; the batch's pixels are made under the
tracker, as their device copy is on a GPU. The model it checks is
:mod:`trainer.estimate.phases`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from trainer.config import TrainingConfig
from trainer.data.latents import encode
from trainer.estimate.allowances import allowances
from trainer.estimate.fake import meta_sdxl
from trainer.estimate.trace import StepTrace, command_line
from trainer.estimate.tracker import StepTracker
from trainer.models.configs import SDXL_BASE_CONFIG
from trainer.run import prepare_model, steps_parts


def trace_latent_caching(config: TrainingConfig, *, base: str | Path = "full") -> StepTrace:
    """Peak bytes by part while one VAE batch of ``config``'s largest bucket is encoded."""
    started = time.perf_counter()
    config_dir = SDXL_BASE_CONFIG if base == "full" else Path(base)
    model = meta_sdxl(config_dir)
    # resolve_precision keeps the config's on a CUDA device; a fake module can't be cast.
    prepare_model(model, config, torch.device("meta"), config.mixed_precision)
    later = steps_parts(model)
    parts = [model.unet, model.vae, model.text_encoder, model.text_encoder_2]
    on_device = [part for part in parts if not any(part is other for other in later)]
    width, height = config.resolution
    batch = max(1, config.vae_batch_size)
    scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
    with FakeTensorMode(allow_non_fake_inputs=True):
        for part in on_device:
            part.to_empty(device="cpu")
        tracker = StepTracker()
        tracker.track_external(*on_device)
        with tracker:
            pixels = torch.empty(batch, 3, height, width)
            latent = (batch, model.vae.config.latent_channels, height // scale, width // scale)
            encode(model.vae, pixels, ["trace"] * batch, torch.empty(latent))
        peak = tracker.peak()
    found = {
        "weights": peak.get("Parameter", 0) + peak.get("Buffer", 0),
        "lora": 0,  # built after caching (build_session)
        "gradients": peak.get("Gradient", 0),
        "optimizer": peak.get("Optstate", 0),
        "activations": peak.get("Activation", 0) + peak.get("Other", 0),
        "temporaries": peak.get("Temp", 0),
    }
    total = sum(found.values())
    seconds = time.perf_counter() - started
    return StepTrace(found, total, 0, seconds, allowances(total))


def main(argv: list[str] | None = None) -> None:
    """Always JSON (``--json`` is accepted, as ``trainer.estimate.trace`` takes it)."""
    command_line(argv, trace_latent_caching, description=__doc__.split("\n")[0], table=False)


if __name__ == "__main__":
    main()
