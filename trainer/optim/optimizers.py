"""The optimizers a payload may name, built on the LoRA parameter groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

ParamGroups = list[dict[str, Any]]


def _adamw(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, **kwargs)


def _adamw8bit(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(groups, **kwargs)


def _lion(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    # bitsandbytes' 32-bit Lion is the lion-pytorch algorithm without another dependency.
    return bnb.optim.Lion(groups, optim_bits=32, **kwargs)


def _lion8bit(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    return bnb.optim.Lion8bit(groups, **kwargs)


def _adafactor(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    from transformers.optimization import Adafactor

    kwargs = {"relative_step": True, "scale_parameter": True, "warmup_init": False, **kwargs}
    if kwargs["relative_step"]:
        # Adafactor chooses its own step size; group rates must be None (as sd-scripts).
        for group in groups:
            group["initial_lr"] = group["lr"]
            group["lr"] = None
        return Adafactor(groups, lr=None, **kwargs)
    return Adafactor(groups, **kwargs)


def _prodigy(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    from prodigyopt import Prodigy

    return Prodigy(groups, **kwargs)


OPTIMIZERS: dict[str, Callable[[ParamGroups, dict[str, Any]], torch.optim.Optimizer]] = {
    "AdamW": _adamw,
    "AdamW8bit": _adamw8bit,
    "Lion": _lion,
    "Lion8bit": _lion8bit,
    "Adafactor": _adafactor,
    "Prodigy": _prodigy,
}


def build_optimizer(
    name: str, groups: ParamGroups, kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    return OPTIMIZERS[name](groups, dict(kwargs))


def describe_optimizer(optimizer: torch.optim.Optimizer, kwargs: dict[str, Any]) -> str:
    """``ss_optimizer`` as sd-scripts writes it: ``module.Class(k=v,...)``."""
    cls = type(optimizer)
    args = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{cls.__module__}.{cls.__name__}" + (f"({args})" if args else "")
