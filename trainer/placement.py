"""Where SDXL's frozen parts live: on the training device only while something uses them.

What sd-scripts frees, lorabox frees too (docs/kohya-semantics.md, "Device memory"):

* once latents are cached the steps never call the VAE, so it waits on the host
  (sd-scripts ``train_network.py: NetworkTrainer.train``: ``vae.to("cpu")`` after
  ``cache_latents``);
* once text-encoder outputs are cached (only allowed with frozen encoders, see
  ``trainer/config/checks.py``) the steps never call the encoders either
  (``sdxl_train_network.py: SdxlNetworkTrainer.cache_text_encoder_outputs_if_needed``:
  ``text_encoders[i].to("cpu", ...)``), and the cached outputs are host memory, each
  batch's copied to the device for its step only (``trainer.data.text_cache``);
* sampling borrows what it needs for its own duration (:func:`borrowed`; sd-scripts
  ``library/train_util.py: sample_images_common`` does the same with the VAE).

The UNet never leaves: every step runs it. :class:`Offload` is the one decision, read
by ``trainer.run.build_session`` (which moves the parts) and by the memory trace
(``trainer.estimate.trace``, which then doesn't count them as device memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from trainer.config import TrainingConfig
from trainer.models.loading import SdxlModel

HOST = torch.device("cpu")


@dataclass(frozen=True)
class Offload:
    """Which frozen parts wait on the host while the steps run."""

    vae: bool
    text_encoders: bool

    @classmethod
    def for_config(cls, config: TrainingConfig) -> Offload:
        return cls(
            vae=config.cache_latents,  # cache_latents_to_disk implies it (trainer/config/build.py)
            text_encoders=config.cache_text_encoder_outputs and not config.train_text_encoder,
        )

    def modules(self, model: SdxlModel) -> list[torch.nn.Module]:
        """The parts of ``model`` that leave the device."""
        parts = [model.vae] if self.vae else []
        if self.text_encoders:
            parts += [model.text_encoder, model.text_encoder_2]
        return parts


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s first parameter lives (the frozen parts are never split)."""
    return next(module.parameters()).device


def to_host(host: torch.device, *modules: torch.nn.Module) -> None:
    """Move ``modules`` to ``host`` in their dtype (sd-scripts casts its encoders to fp32 on
    the CPU because it may run them there; lorabox only keeps them there)."""
    for module in modules:
        module.to(host)
    if torch.cuda.is_available():
        # sd-scripts library/device_utils.py: clean_memory_on_device; the blocks just freed
        # go back to the driver, so the free memory a worker reports is true.
        torch.cuda.empty_cache()


def _held(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.Tensor]]:
    """(owner, name, parameter or buffer) of every tensor ``module`` holds."""
    found: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
    for owner in module.modules():
        found += [(owner, name, p) for name, p in owner.named_parameters(recurse=False)]
        found += [(owner, name, b) for name, b in owner.named_buffers(recurse=False)]
    return found


@contextmanager
def borrowed(device: torch.device, *modules: torch.nn.Module) -> Iterator[None]:
    """Each of ``modules`` on ``device`` for the block, then back where it was.

    The block runs on device copies of the parameters and buffers; afterwards the original
    ones go back in place. Sampling changes no weight, so nothing is copied back from the
    device, and every Parameter the optimizer or a LoRA layer holds is the same object as
    before. A module already on ``device`` runs on its own tensors (``Tensor.to`` returns
    a tensor already there as it is)."""
    saved = [held for module in modules for held in _held(module)]
    for owner, name, tensor in saved:
        moved = tensor.detach().to(device, non_blocking=True)
        if isinstance(tensor, torch.nn.Parameter):
            moved = torch.nn.Parameter(moved, requires_grad=tensor.requires_grad)
        setattr(owner, name, moved)
    try:
        yield
    finally:
        for owner, name, tensor in saved:
            setattr(owner, name, tensor)
