"""Loss scaling for fp16 training, including ``full_fp16`` (the LoRA weights themselves fp16).

sd-scripts' ``train_network.py`` with ``--full_fp16`` casts the network to fp16
(``accelerator.prepare`` then sees fp16 parameters, so their gradients are fp16 too) and
calls ``library/train_util.py: patch_accelerator_for_fp16_training``, which makes the
accelerator's GradScaler unscale fp16 gradients: PyTorch's ``GradScaler.unscale_`` calls
``_unscale_grads_(..., allow_fp16=False)`` and stops with "Attempting to unscale FP16
gradients". :class:`Fp16GradScaler` is that patch as a subclass: everything else (the
dynamic scale, skipping a step whose gradients overflowed, its state dict) is PyTorch's.
"""

from __future__ import annotations

import torch


class Fp16GradScaler(torch.amp.GradScaler):
    """A GradScaler that unscales fp16 gradients in place, as sd-scripts patches it."""

    def _unscale_grads_(
        self,
        optimizer: torch.optim.Optimizer,
        inv_scale: torch.Tensor,
        found_inf: torch.Tensor,
        allow_fp16: bool,
    ) -> dict[torch.device, torch.Tensor]:
        # patch_accelerator_for_fp16_training: _unscale_grads_(..., True) whatever is asked.
        return super()._unscale_grads_(optimizer, inv_scale, found_inf, True)


def gradient_scaler(device: torch.device, precision: str, full_fp16: bool) -> torch.amp.GradScaler:
    """Enabled for fp16 mixed precision and for fp16 weights (``full_fp16``); disabled, each
    call passes through. ``full_fp16`` scales on a CPU too (where the trainer computes in
    fp32, ``trainer.run.resolve_precision``): its fp16 gradients would underflow unscaled."""
    if full_fp16:
        return Fp16GradScaler(device.type, enabled=True)
    # "cuda" even on a CPU: disabled there, and a disabled CPU scaler warns on creation.
    return torch.amp.GradScaler("cuda", enabled=precision == "fp16")
