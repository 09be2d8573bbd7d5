"""The maths, checked against literal values of sd-scripts' formulas or computed here."""

from __future__ import annotations

import math

import pytest
import torch

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.loss import all_snr, debiased_weight, loss_weights, min_snr_weight, offset_noise
from trainer.models.loading import training_noise_scheduler
from trainer.optim.schedule_math import warmup_steps
from trainer.optim.schedulers import build_scheduler
from trainer.plan import epochs_for, total_steps


@pytest.fixture(scope="module")
def snr() -> torch.Tensor:
    return all_snr(training_noise_scheduler().alphas_cumprod)


def test_snr_of_the_sdxl_schedule_matches_the_reference(snr):
    # all_snr as sd-scripts computes it (library/custom_train_functions.py:
    # prepare_scheduler_for_custom_training): ~1175 at t=0, 0.38 at t=500, 0.0047 at t=999.
    assert float(snr[0]) == pytest.approx(1175, rel=0.01)
    assert float(snr[500]) == pytest.approx(0.38, rel=0.02)
    assert float(snr[999]) == pytest.approx(0.0047, rel=0.02)


def test_betas_follow_the_scaled_linear_formula():
    betas = training_noise_scheduler().betas.double()
    t = torch.arange(1000, dtype=torch.float64)
    expected = (math.sqrt(0.00085) + (math.sqrt(0.012) - math.sqrt(0.00085)) * t / 999) ** 2
    assert torch.allclose(betas, expected, rtol=1e-5)


@shows_effect("debiased_estimation_loss")
def test_debiased_weights_match_the_reference(snr):
    # sd-scripts' apply_debiased_estimation (library/custom_train_functions.py), 1/sqrt(SNR)
    # with SNR capped at 1000: about 0.032 at t=0, 1.6 at t=500, 14.6 at t=999.
    weights = debiased_weight(snr[[0, 500, 999]])
    assert weights.tolist() == pytest.approx([1 / math.sqrt(1000), 1.6, 14.6], rel=0.02)


@shows_effect("min_snr_gamma")
def test_min_snr_gamma_weight_is_min_snr_gamma_over_snr():
    snr = torch.tensor([0.5, 5.0, 50.0])
    assert min_snr_weight(snr, 5.0).tolist() == pytest.approx([1.0, 1.0, 0.1])


def test_weights_combine_min_snr_then_debiased():
    snr = torch.tensor([0.25, 100.0])
    combined = loss_weights(snr, 5.0, True)
    expected = [1.0 * (1 / 0.5), (5 / 100) * (1 / 10)]
    assert combined.tolist() == pytest.approx(expected)
    assert loss_weights(snr, None, False).tolist() == [1.0, 1.0]


@shows_effect("noise_offset")
def test_noise_offset_shifts_each_channel_by_a_constant():
    torch.manual_seed(0)
    noise = torch.zeros(2, 4, 8, 8)
    shifted = offset_noise(noise, 0.1, False, None)
    per_channel = shifted.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel))
    torch.manual_seed(0)
    expected = 0.1 * torch.randn(2, 4, 1, 1)
    assert torch.allclose(shifted[:, :, :1, :1], expected)


@shows_effect("noise_offset_random_strength")
def test_noise_offset_random_strength_scales_by_one_uniform_draw():
    torch.manual_seed(3)
    shifted = offset_noise(torch.zeros(1, 4, 2, 2), 0.2, True, None)
    torch.manual_seed(3)
    strength = 0.2 * torch.rand(1).item()
    expected = strength * torch.randn(1, 4, 1, 1)
    assert torch.allclose(shifted[:, :, :1, :1], expected)


def test_zero_noise_offset_leaves_the_noise_alone():
    noise = torch.randn(1, 4, 2, 2)
    assert offset_noise(noise, 0.0, True, None) is noise


def config(**overrides):
    return parse_payload(tiny_payload(**overrides)).config


@shows_effect("train_batch_size", "epoch", "gradient_accumulation_steps")
def test_total_steps_follow_the_gui_formula():
    # The GUI's estimate (kohya_gui/lora_gui.py: train_model): 300 images x repeats, batch 3,
    # 36 epochs -> 3600 steps.
    assert total_steps(config(train_batch_size=3, epoch=36), 300, batches=103) == 3600
    # ... and with 103 batches per epoch (partial batches per bucket) it stops in epoch 35.
    assert epochs_for(3600, 103, 1) == 35
    # Gradient accumulation divides; regularisation doubles.
    assert (
        total_steps(config(train_batch_size=2, epoch=3, gradient_accumulation_steps=2), 10, 5) == 8
    )
    assert total_steps(config(train_batch_size=2, epoch=3), 10, 5, with_reg=True) == 30


@shows_effect("max_train_steps", "max_train_epochs")
def test_max_train_steps_and_max_train_epochs_override_the_estimate():
    assert total_steps(config(max_train_steps=77), 300, 103) == 77
    assert (
        total_steps(config(max_train_epochs=4, gradient_accumulation_steps=2), 300, 103) == 4 * 52
    )


@shows_effect("lr_warmup", "lr_warmup_steps")
def test_warmup_is_a_rounded_percentage_of_total_steps():
    assert warmup_steps(3600, 10) == 360
    assert warmup_steps(25, 10) == 2  # round(2.5) rounds to even, as the GUI's Python does
    assert warmup_steps(35, 10) == 4
    assert warmup_steps(100, 10, absolute=7) == 7


def lr_curve(name: str, total: int, warmup: int, **kwargs) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = build_scheduler(
        name, optimizer, total, warmup, kwargs.pop("cycles", 1), kwargs.pop("power", 1.0), {}
    )
    values = []
    for _ in range(total):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


@shows_effect("lr_scheduler", "lr_scheduler_num_cycles", "lr_scheduler_power")
def test_schedules_with_warmup_follow_their_formulas():
    total, warm = 10, 2
    p = [(s - warm) / (total - warm) for s in range(total)]
    assert lr_curve("constant", total, 0) == [1.0] * total
    assert lr_curve("constant_with_warmup", total, warm) == pytest.approx([0, 0.5] + [1.0] * 8)
    linear = [
        s / warm if s < warm else max(0.0, (total - s) / (total - warm)) for s in range(total)
    ]
    assert lr_curve("linear", total, warm) == pytest.approx(linear)
    cosine = [s / warm if s < warm else 0.5 * (1 + math.cos(math.pi * p[s])) for s in range(total)]
    assert lr_curve("cosine", total, warm) == pytest.approx(cosine)
    restarts = [
        s / warm if s < warm else 0.5 * (1 + math.cos(math.pi * ((2 * p[s]) % 1.0)))
        for s in range(total)
    ]
    assert lr_curve("cosine_with_restarts", total, warm, cycles=2) == pytest.approx(restarts)
    poly = [s / warm if s < warm else ((1 - 1e-7) * (1 - p[s]) ** 2 + 1e-7) for s in range(total)]
    assert lr_curve("polynomial", total, warm, power=2.0) == pytest.approx(poly)
