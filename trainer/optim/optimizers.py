"""The optimizers a payload may name, built on the LoRA parameter groups as sd-scripts'
``library/train_util.py: get_optimizer`` builds them: the same classes from the same
packages, so ``ss_optimizer`` names what sd-scripts would name.

Each group carries its own rate; the constructors' ``lr`` is left at its default (sd-scripts
passes ``learning_rate``, which only the groups without a rate would use, and every group
here has one). Arguments sd-scripts adds itself are added by the config
(``trainer.config.optimizer_rules``: SGD's momentum 0.9, Adafactor's relative_step), so
``describe_optimizer`` lists them as ``ss_optimizer`` does.

bitsandbytes' Paged* optimizers keep each state tensor of 10^5 elements or more in CUDA
unified memory that the driver pages out to host memory when the GPU runs short
(``bitsandbytes/optim/optimizer.py: Optimizer8bit.get_state_buffer``); on CPU tensors they
warn and use ordinary tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

ParamGroups = list[dict[str, Any]]
Builder = Callable[[ParamGroups, dict[str, Any]], torch.optim.Optimizer]


def _adamw(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, **kwargs)


def _bitsandbytes(name: str) -> Builder:
    def build(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
        import bitsandbytes as bnb

        # SGD8bit has no default lr; every group carries its own, so any default will do
        # (1e-3 is bitsandbytes' AdamW8bit default).
        lr = groups[0].get("lr", 1e-3)
        optimizer: torch.optim.Optimizer = getattr(bnb.optim, name)(groups, lr=lr, **kwargs)
        return optimizer

    return build


def _lion(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    from lion_pytorch import Lion

    return Lion(groups, **kwargs)


def _sgd_nesterov(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, nesterov=True, **kwargs)


def _dadaptation(name: str, experimental: bool = False) -> Builder:
    def build(groups: ParamGroups, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
        import dadaptation
        import dadaptation.experimental

        module = dadaptation.experimental if experimental else dadaptation
        optimizer: torch.optim.Optimizer = getattr(module, name)(groups, **kwargs)
        return optimizer

    return build


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


OPTIMIZERS: dict[str, Builder] = {
    "AdamW": _adamw,
    "AdamW8bit": _bitsandbytes("AdamW8bit"),
    "PagedAdamW8bit": _bitsandbytes("PagedAdamW8bit"),
    "PagedAdamW32bit": _bitsandbytes("PagedAdamW32bit"),
    "Lion": _lion,
    "Lion8bit": _bitsandbytes("Lion8bit"),
    "PagedLion8bit": _bitsandbytes("PagedLion8bit"),
    "SGDNesterov": _sgd_nesterov,
    # sd-scripts builds SGD8bit a second time without nesterov=True (get_optimizer's 8-bit
    # branch ends in a constructor call for every 8-bit type), and bitsandbytes' SGD8bit
    # ignores nesterov anyway: 8-bit momentum SGD, no Nesterov step.
    "SGDNesterov8bit": _bitsandbytes("SGD8bit"),
    "Adafactor": _adafactor,
    "Prodigy": _prodigy,
    # sd-scripts: "DAdaptation" is DAdaptAdamPreprint; it and DAdaptAdanIP are experimental.
    "DAdaptation": _dadaptation("DAdaptAdamPreprint", experimental=True),
    "DAdaptAdamPreprint": _dadaptation("DAdaptAdamPreprint", experimental=True),
    "DAdaptAdaGrad": _dadaptation("DAdaptAdaGrad"),
    "DAdaptAdam": _dadaptation("DAdaptAdam"),
    "DAdaptAdan": _dadaptation("DAdaptAdan"),
    "DAdaptAdanIP": _dadaptation("DAdaptAdanIP", experimental=True),
    "DAdaptLion": _dadaptation("DAdaptLion"),
    "DAdaptSGD": _dadaptation("DAdaptSGD"),
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
