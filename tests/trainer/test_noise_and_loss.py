"""Noise, targets and loss weights, against sd-scripts' formulas
(``library/custom_train_functions.py``, ``train_util.py: get_noise_noisy_latents_and_timesteps``).

Each pure function is checked against an independent computation; one session
of the miniature SDXL checks that every key reaches the step's loss.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from tests.factories import make_dataset, tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.data.batches import Batch
from trainer.data.folders import ImageRecord, balance_regularization, scan_dataset
from trainer.hooks import null_reporter
from trainer.loss import (
    input_perturbation,
    loss_weights,
    min_snr_weight,
    multires_noise,
    offset_noise,
    v_pred_scale,
    velocity,
)
from trainer.models.loading import training_noise_scheduler
from trainer.plan import plan_from_scan
from trainer.run import TrainingJob, build_session, seed_everything
from trainer.step import training_loss


@pytest.fixture(scope="module")
def scheduler() -> DDPMScheduler:
    return training_noise_scheduler()


def pyramid(noise: torch.Tensor, iterations: int, discount: float, seed: int) -> torch.Tensor:
    """sd-scripts' pyramid_noise_like, written out with the same draws."""
    g = torch.Generator().manual_seed(seed)
    _, _, height, width = noise.shape
    expected = noise.clone()
    upsample = torch.nn.Upsample(size=(height, width), mode="bilinear")
    for i in range(iterations):
        r = torch.rand(1, generator=g).item() * 2 + 2
        h, w = max(1, int(height / r**i)), max(1, int(width / r**i))
        expected += upsample(torch.randn(*noise.shape[:2], h, w, generator=g)) * discount**i
        if h == 1 or w == 1:
            break
    return expected / expected.std()


@shows_effect("multires_noise_iterations", "multires_noise_discount")
def test_multires_noise_adds_discounted_upsampled_levels_and_rescales():
    noise = torch.randn(2, 4, 16, 12, generator=torch.Generator().manual_seed(0))
    result = multires_noise(noise, 3, 0.5, torch.Generator().manual_seed(7))
    assert torch.allclose(result, pyramid(noise, 3, 0.5, 7), atol=1e-6)
    assert float(result.std()) == pytest.approx(1.0)
    other = multires_noise(noise, 3, 0.9, torch.Generator().manual_seed(7))
    assert not torch.allclose(other, result)
    assert multires_noise(noise, 0, 0.3, None) is noise


def test_multires_noise_stops_after_the_one_pixel_level():
    noise = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    result = multires_noise(noise, 50, 0.3, torch.Generator().manual_seed(1))
    assert torch.allclose(result, pyramid(noise, 50, 0.3, 1), atol=1e-6)


@shows_effect("adaptive_noise_scale")
def test_adaptive_noise_scale_adds_the_latent_mean_to_the_offset():
    latents = torch.randn(2, 4, 8, 8) + torch.tensor([0.0, 1.0, -2.0, 0.5]).view(1, 4, 1, 1)
    noise = torch.zeros(2, 4, 8, 8)
    torch.manual_seed(5)
    shifted = offset_noise(noise, 0.1, False, None, latents=latents, adaptive_scale=-0.2)
    torch.manual_seed(5)
    shift = torch.randn(2, 4, 1, 1)
    offset = torch.clamp(0.1 - 0.2 * latents.mean(dim=(2, 3), keepdim=True).abs(), min=0)
    assert torch.allclose(shifted[:, :, :1, :1], offset * shift)
    assert (offset == 0).any()  # the clamp acts for the channels with a large mean


@shows_effect("ip_noise_gamma", "ip_noise_gamma_random_strength")
def test_input_perturbation_noises_the_latents_but_not_the_target(scheduler):
    x0, eps = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    t = torch.tensor([10, 500, 990])
    torch.manual_seed(2)
    noisy = scheduler.add_noise(x0, input_perturbation(eps, 0.1, False, None), t)
    torch.manual_seed(2)
    extra = torch.randn(3, 4, 4, 4)
    ab = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(noisy, ab.sqrt() * x0 + (1 - ab).sqrt() * (eps + 0.1 * extra), atol=1e-6)
    torch.manual_seed(2)
    random = input_perturbation(eps, 0.1, True, None)
    torch.manual_seed(2)
    strength = 0.1 * torch.rand(1).item()
    assert torch.allclose(random, eps + strength * torch.randn(3, 4, 4, 4))
    assert input_perturbation(eps, 0.0, True, None) is eps


@shows_effect("v_parameterization")
def test_velocity_target_is_sqrt_ab_eps_minus_sqrt_one_minus_ab_x0(scheduler):
    x0, eps = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    t = torch.tensor([0, 700])
    ab = scheduler.alphas_cumprod[t]
    expected = torch.stack(
        [math.sqrt(a) * eps[i] - math.sqrt(1 - a) * x0[i] for i, a in enumerate(ab.tolist())]
    )
    assert torch.allclose(velocity(x0, eps, ab), expected, atol=1e-6)
    assert torch.allclose(velocity(x0, eps, ab), scheduler.get_velocity(x0, eps, t), atol=1e-6)


def test_min_snr_for_v_prediction_divides_by_snr_plus_one():
    snr = torch.tensor([0.5, 5.0, 50.0])
    assert min_snr_weight(snr, 5.0, v_prediction=True).tolist() == pytest.approx(
        [0.5 / 1.5, 5 / 6, 5 / 51]
    )
    weights = loss_weights(snr, 5.0, False, v_prediction=True)
    assert weights.tolist() == pytest.approx([0.5 / 1.5, 5 / 6, 5 / 51])


@shows_effect("scale_v_pred_loss_like_noise_pred")
def test_scale_v_pred_loss_like_noise_pred_weights_by_snr_over_snr_plus_one():
    snr = torch.tensor([0.25, 3.0, 5000.0])
    expected = [0.25 / 1.25, 3 / 4, 1000 / 1001]  # SNR capped at 1000
    assert v_pred_scale(snr).tolist() == pytest.approx(expected)
    weights = loss_weights(snr, None, False, v_prediction=True, scale_v_pred_like_noise_pred=True)
    assert weights.tolist() == pytest.approx(expected)


@shows_effect("v_pred_like_loss")
def test_v_pred_like_loss_adds_k_times_loss_over_the_scale():
    snr = torch.tensor([0.25, 3.0])
    weights = loss_weights(snr, None, False, v_pred_like_loss=0.5)
    assert weights.tolist() == pytest.approx([1 + 0.5 / 0.2, 1 + 0.5 / 0.75])
    # Applied after min-SNR and before the debiased weight (sd-scripts' order).
    full = loss_weights(snr, 1.0, True, v_pred_like_loss=0.5)
    expected = [(min(s, 1.0) / s) * (1 + 0.5 * (s + 1) / s) / math.sqrt(s) for s in snr.tolist()]
    assert full.tolist() == pytest.approx(expected)


def record(name: str, repeats: int) -> ImageRecord:
    from pathlib import Path

    return ImageRecord(Path(name), "", (64, 64), f"{repeats}_reg", repeats, is_reg=True)


def test_regularization_images_are_balanced_against_the_training_images():
    reg = (record("a", 2), record("b", 2), record("c", 2))
    # 3 training images x repeats: a(2) then b(2) reach 4 >= 3, c is unused.
    assert [(r.path.name, r.repeats) for r in balance_regularization(reg, 3)] == [
        ("a", 2),
        ("b", 2),
    ]
    # 9: all three (6), then one more repeat each in turn: a, b, c.
    assert [r.repeats for r in balance_regularization(reg, 9)] == [3, 3, 3]
    assert [r.repeats for r in balance_regularization(reg, 8)] == [3, 3, 2]


@pytest.fixture(scope="module")
def session(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    data = make_dataset(root / "data", {"1_shapes": 2}, seed=4)
    reg = make_dataset(root / "reg", {"1_class": 2}, seed=5)
    config = parse_payload(tiny_payload(save_every_n_epochs=0, max_train_steps=1)).config
    job = TrainingJob(config, tiny_model, data, root / "out", reg_data_dir=reg)
    scan = scan_dataset(data, config.caption_extension)
    reg_scan = scan_dataset(reg, config.caption_extension, is_reg=True)
    seed_everything(0)
    plan = plan_from_scan(config, scan, reg_scan)
    return build_session(job, scan, plan, null_reporter, seed=0, reg_scan=reg_scan)


def loss_with(s, batch, **changes) -> float:
    original = s.config
    s.config = original.model_copy(update=changes)
    try:
        torch.manual_seed(11)
        s.caption_rng.seed(11)
        with torch.no_grad():
            return float(training_loss(s, batch))
    finally:
        s.config = original


@shows_effect("prior_loss_weight")
def test_every_noise_and_loss_key_reaches_the_training_loss(session):
    train = [i for i, im in enumerate(session.images) if not im.record.is_reg]
    reg = [i for i, im in enumerate(session.images) if im.record.is_reg]
    assert len(train) == 2 and len(reg) == 2
    assert session.metadata["ss_num_reg_images"] == "2"
    both = Batch(session.images[0].bucket, (train[0], reg[0]))
    base = loss_with(session, both)
    assert loss_with(session, both) == base  # same seed, same loss
    changes = [
        {"multires_noise_iterations": 3},
        {"ip_noise_gamma": 0.5},
        {"adaptive_noise_scale": 0.5},
        {"v_parameterization": True, "debiased_estimation_loss": False},
        {"v_pred_like_loss": 0.5},
        {"prior_loss_weight": 0.25},
    ]
    for change in changes:
        assert loss_with(session, both) != loss_with(session, both, **change), change
    # prior_loss_weight scales only the regularization sample's share.
    only_train = Batch(both.bucket, (train[0],))
    assert loss_with(session, only_train, prior_loss_weight=0.25) == pytest.approx(
        loss_with(session, only_train)
    )


def test_v_parameterization_is_recorded_as_the_prediction_type(toy_dataset):
    from tests.trainer.test_effects_core import metadata_for

    assert metadata_for(toy_dataset, v_parameterization=True)["modelspec.prediction_type"] == "v"
    assert metadata_for(toy_dataset)["modelspec.prediction_type"] == "epsilon"
