"""The set-up phases that can hold more than a training step: caching latents and text.

``trainer.run.build_session`` caches before the first step, with parts on the device that
the steps don't keep (``trainer.placement.Offload`` sends the cached parts to the host only
once their cache is made):

- **caching latents** (``cache_image_latents``, ``trainer/data/latents.py: cache_latents``):
  the fp32 VAE alone. ``prepare_model`` places only the VAE; the UNet and both encoders
  join the device after caching (``trainer.run.place_for_steps``), the network is built
  after that, and the optimizer later still, as in sd-scripts (``train_network.py:
  NetworkTrainer.train``). The VAE encodes ``vae_batch_size`` images of the largest bucket
  in fp32 under ``no_grad`` (``encode``; the latents go to the host as they come). The
  encoder's high is the same as a step's that encodes its batch (``VAE_ENCODE``, fitted on
  the latents-not-cached profile: the step encodes outside autocast too,
  ``trainer/step.py: training_loss``).
- **caching text-encoder outputs** (``cache_text_conditioning``): the UNet, both encoders
  and the network on the device, the VAE already gone when latents are cached, each
  caption encoded alone (batch 1) under ``no_grad``; the optimizer exists but allocates its
  state on its first step (torch's and bitsandbytes' optimizers alike).

docs/estimates.md ("Phases") has the figures; ``trainer.estimate.trace_caching`` traces the
first phase for the test that checks it.
"""

from __future__ import annotations

from dataclasses import replace

from trainer.config import TrainingConfig
from trainer.estimate.architecture import Architecture
from trainer.estimate.coefficients import VAE_ENCODE
from trainer.estimate.paths import Step
from trainer.estimate.walk import moments

STEP = "step"
CACHING_LATENTS = "caching_latents"
CACHING_TEXT = "caching_text"


def latent_caching_bytes(config: TrainingConfig, arch: Architecture, step: Step) -> int:
    """The VAE's high while it encodes one ``vae_batch_size`` batch of the largest bucket."""
    pixels = config.vae_batch_size * step.image_positions(0) * arch.vae.first_channels
    return round(VAE_ENCODE * pixels)


def text_caching_bytes(arch: Architecture, step: Step) -> int:
    """The frozen encoders' forward high on one caption (the first moment of a step whose
    encoders are frozen and whose batch is one image)."""
    alone = replace(step, batch=1, text=False, text_cached=False, latents_cached=True)
    first = next(iter(moments(arch, alone, {}, accumulating=False)))
    return round(first.total)


def caching_phases(config: TrainingConfig, step: Step) -> tuple[str, ...]:
    """The caching phases ``config``'s run goes through, in order."""
    found = []
    if config.cache_latents:
        found.append(CACHING_LATENTS)
    if config.cache_text_encoder_outputs:
        found.append(CACHING_TEXT)
    return tuple(found)
