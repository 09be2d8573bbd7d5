"""Every optimizer and schedule of the kohya_ss GUI, as sd-scripts builds them.

Sources: sd-scripts ``library/train_util.py: get_optimizer`` and ``get_scheduler_fix`` (the
same for these at kohya_ss v24.1.7's ``b8896aad`` and at main ``48d368fa``); the libraries'
own classes (torch, bitsandbytes, lion-pytorch, dadaptation, diffusers) for the update rules.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.config.arguments import OPTIMIZER_ARGUMENTS
from trainer.config.errors import PayloadError
from trainer.config.keys_core import OPTIMIZERS as OPTIMIZER_NAMES
from trainer.optim.optimizers import OPTIMIZERS, build_optimizer, describe_optimizer
from trainer.optim.schedulers import build_scheduler

pytestmark = pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")


def config(**overrides: Any):
    return parse_payload(tiny_payload(**overrides)).config


def problems(**overrides: Any) -> list[str]:
    with pytest.raises(PayloadError) as caught:
        config(**overrides)
    return [f"{p.field}: {p.message}" for p in caught.value.problems]


def one_step(name: str, kwargs: dict[str, Any], grad: torch.Tensor, steps: int = 1):
    """A parameter of zeros after ``steps`` optimizer steps with gradient ``grad``."""
    param = torch.nn.Parameter(torch.zeros_like(grad))
    optimizer = build_optimizer(name, [{"params": [param], "lr": 0.1}], kwargs)
    for _ in range(steps):
        param.grad = grad.clone()
        optimizer.step()
    return param.detach(), optimizer


GRAD = torch.tensor([0.5, -2.0, 0.0, 1.0])
NEEDED = {"SGDNesterov": {"momentum": 0.9}, "SGDNesterov8bit": {"momentum": 0.9}}  # config adds it

# ss_optimizer = optimizer_class.__module__ + "." + optimizer_class.__name__ (get_optimizer).
CLASSES = {
    "AdamW": "torch.optim.adamw.AdamW",
    "AdamW8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "PagedAdamW8bit": "bitsandbytes.optim.adamw.PagedAdamW8bit",
    "PagedAdamW32bit": "bitsandbytes.optim.adamw.PagedAdamW32bit",
    "Lion": "lion_pytorch.lion_pytorch.Lion",
    "Lion8bit": "bitsandbytes.optim.lion.Lion8bit",
    "PagedLion8bit": "bitsandbytes.optim.lion.PagedLion8bit",
    "SGDNesterov": "torch.optim.sgd.SGD",
    "SGDNesterov8bit": "bitsandbytes.optim.sgd.SGD8bit",
    "Adafactor": "transformers.optimization.Adafactor",
    "Prodigy": "prodigyopt.prodigy.Prodigy",
    "DAdaptation": "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint",
    "DAdaptAdamPreprint": "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint",
    "DAdaptAdaGrad": "dadaptation.dadapt_adagrad.DAdaptAdaGrad",
    "DAdaptAdam": "dadaptation.dadapt_adam.DAdaptAdam",
    "DAdaptAdan": "dadaptation.dadapt_adan.DAdaptAdan",
    "DAdaptAdanIP": "dadaptation.experimental.dadapt_adan_ip.DAdaptAdanIP",
    "DAdaptLion": "dadaptation.dadapt_lion.DAdaptLion",
    "DAdaptSGD": "dadaptation.dadapt_sgd.DAdaptSGD",
}


@shows_effect("optimizer")
def test_every_gui_optimizer_is_the_class_sd_scripts_builds():
    assert set(OPTIMIZERS) == set(OPTIMIZER_NAMES) == set(CLASSES)
    for name, expected in CLASSES.items():
        _, optimizer = one_step(name, NEEDED.get(name, {}), GRAD, steps=0)
        assert describe_optimizer(optimizer, {}) == expected, name


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_accepted_arguments_are_the_constructors_own(name):
    # The submit-time allow-list must never let through a name the constructor rejects.
    _, optimizer = one_step(name, NEEDED.get(name, {}), GRAD, steps=0)
    parameters = inspect.signature(type(optimizer).__init__).parameters
    assert OPTIMIZER_ARGUMENTS[name] <= set(parameters) - {"self", "params", "lr"}


def test_sgd_nesterov_takes_a_nesterov_step_with_momentum_0_9():
    # get_optimizer: torch.optim.SGD(nesterov=True), momentum 0.9 unless given. First step:
    # buf = g, update g + mu*buf = (1 + mu) g; second: buf = mu g + g, update g + mu*buf.
    c = config(optimizer="SGDNesterov")
    assert c.optimizer_args == {"momentum": 0.9}
    mu, lr = 0.9, 0.1
    first, _ = one_step("SGDNesterov", c.optimizer_args, GRAD)
    assert torch.allclose(first, -lr * (1 + mu) * GRAD)
    second, optimizer = one_step("SGDNesterov", c.optimizer_args, GRAD, steps=2)
    buf = mu * GRAD + GRAD
    assert torch.allclose(second, first - lr * (GRAD + mu * buf))
    assert describe_optimizer(optimizer, c.optimizer_args) == "torch.optim.sgd.SGD(momentum=0.9)"


def test_sgd_nesterov_8bit_is_momentum_sgd_as_sd_scripts_builds_it():
    # sd-scripts re-creates bnb SGD8bit without nesterov=True, and SGD8bit has no Nesterov
    # step: plain momentum, p -= lr * buf with buf = mu buf + g (below 4096 elements bitsandbytes
    # keeps 32-bit state, so the values are exact).
    c = config(optimizer="SGDNesterov8bit")
    mu, lr = c.optimizer_args["momentum"], 0.1
    second, _ = one_step("SGDNesterov8bit", c.optimizer_args, GRAD, steps=2)
    expected = -lr * GRAD - lr * (mu * GRAD + GRAD)
    assert torch.allclose(second, expected, atol=1e-6)


def test_nesterov_needs_momentum():
    assert any("momentum > 0" in p for p in problems(optimizer="SGDNesterov",
                                                      optimizer_args="momentum=0"))  # fmt: skip


def test_lion_is_lion_pytorch_sign_update_with_decoupled_decay():
    # lion_pytorch update_fn: p *= 1 - lr*wd; p -= lr * sign(b1 m + (1 - b1) g); m starts at 0.
    start = torch.tensor([1.0, 1.0, 1.0, 1.0])
    param = torch.nn.Parameter(start.clone())
    optimizer = build_optimizer("Lion", [{"params": [param], "lr": 0.1}], {"weight_decay": 0.5})
    param.grad = GRAD.clone()
    optimizer.step()
    expected = start * (1 - 0.1 * 0.5) - 0.1 * torch.sign(GRAD)
    assert torch.allclose(param.detach(), expected)


@pytest.mark.parametrize("name", ["PagedAdamW8bit", "PagedAdamW32bit"])
def test_paged_adamw_takes_the_adamw_step(name):
    # First AdamW step (bias-corrected m = g, v = g^2): p = p(1 - lr wd) - lr g / (|g| + eps);
    # the tensor is below min_8bit_size, so even the 8-bit one keeps 32-bit state here.
    param, optimizer = one_step(name, {"weight_decay": 0.0}, GRAD)
    expected = -0.1 * GRAD / (GRAD.abs() + 1e-8)
    assert torch.allclose(param, expected, atol=1e-6)
    assert optimizer.is_paged  # type: ignore[attr-defined]


def test_paged_lion_8bit_takes_the_lion_step():
    param, optimizer = one_step("PagedLion8bit", {}, GRAD)
    assert torch.allclose(param, -0.1 * torch.sign(GRAD))
    assert optimizer.is_paged  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(n for n in CLASSES if n.startswith("DAdapt")))
def test_dadaptation_steps_match_the_library_class(name):
    # The same class from dadaptation, built directly, takes the same two steps.
    args = {"d0": 1e-2, "weight_decay": 0.01}
    ours, optimizer = one_step(name, args, GRAD, steps=2)
    param = torch.nn.Parameter(torch.zeros_like(GRAD))
    reference = type(optimizer)([{"params": [param], "lr": 0.1}], **args)
    for _ in range(2):
        param.grad = GRAD.clone()
        reference.step()
    assert torch.equal(ours, param.detach())
    assert ours.abs().sum() > 0  # it moved


def test_one_rate_dadaptation_refuses_different_part_rates():
    # dadaptation's DAdaptAdam.step raises on groups with different rates (not 0).
    found = problems(optimizer="DAdaptAdam", unet_lr=1.0, text_encoder_lr=0.5, learning_rate=1)
    assert any("one rate for every trained part" in p for p in found)
    same = config(optimizer="DAdaptAdam", unet_lr=1.0, text_encoder_lr=1.0, learning_rate=1)
    assert same.optimizer == "DAdaptAdam"
    # DAdaptAdan reads each group's own rate: allowed.
    assert config(optimizer="DAdaptAdan", unet_lr=1.0, text_encoder_lr=0.5).optimizer


def test_adaptive_optimizers_warn_about_small_rates():
    parsed = parse_payload(tiny_payload(optimizer="DAdaptLion", unet_lr=1e-4, text_encoder_lr=1e-4))
    assert any("around 1.0" in w.message for w in parsed.warnings)


def test_import_paths_are_never_loaded():
    (message,) = problems(optimizer="bitsandbytes.optim.AdEMAMix8bit")
    assert "never loaded" in message


@shows_effect("lr_scheduler")
def test_piecewise_constant_follows_step_rules():
    # diffusers get_piecewise_constant_schedule: multiplier m_i while step < s_i, then the last.
    c = config(
        lr_scheduler="piecewise_constant",
        lr_warmup=0,
        lr_scheduler_args="step_rules='1:3,0.5:5,0.1'",
    )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = build_scheduler(
        c.lr_scheduler, optimizer, 10, 7, 1, 1.0, c.lr_scheduler_args
    )  # a warmup of 7 is ignored, as get_scheduler_fix ignores it
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([2.0, 2.0, 2.0, 1.0, 1.0, 0.2, 0.2])


def test_piecewise_constant_needs_readable_step_rules():
    base = {"lr_scheduler": "piecewise_constant", "lr_warmup": 0}
    assert any("needs step_rules" in p for p in problems(**base))
    bad = problems(**base, lr_scheduler_args="step_rules='1:x,0.1'")
    assert any("multiplier:step" in p for p in bad)
    parsed = parse_payload(
        tiny_payload(
            lr_scheduler="piecewise_constant",
            lr_warmup=10,
            lr_scheduler_args="step_rules='1:3,0.1'",
        )  # fmt: skip
    )
    assert any("piecewise_constant follows step_rules" in w.message for w in parsed.warnings)
