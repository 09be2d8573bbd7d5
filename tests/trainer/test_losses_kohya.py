"""The losses of the kohya_ss GUI against sd-scripts' formulas, written out here.

Sources: sd-scripts ``library/train_util.py: get_timesteps_and_huber_c`` (kohya_ss v24.1.7's
commit ``b8896aad``; ``get_huber_threshold_if_needed`` at main), ``conditional_loss``,
``get_timesteps`` (main); ``library/custom_train_functions.py: apply_masked_loss``,
``apply_debiased_estimation`` (main); ``train_network.py: NetworkTrainer.train`` (order).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.config.errors import PayloadError
from trainer.data.augment import PLAIN, Augmentation
from trainer.data.batches import Batch, TrainingImage
from trainer.data.folders import ImageRecord, scan_dataset
from trainer.data.masks import alpha_mask, batch_masks
from trainer.loss import (
    all_snr,
    debiased_weight,
    element_loss,
    huber_c,
    loss_weights,
    per_sample_loss,
    sample_timesteps,
)
from trainer.models.loading import training_noise_scheduler
from trainer.step import prediction_loss


def config(**overrides):
    return parse_payload(tiny_payload(**overrides)).config


@pytest.fixture(scope="module")
def alphas() -> torch.Tensor:
    return training_noise_scheduler().alphas_cumprod


T = torch.tensor([0, 250, 999])


@shows_effect("huber_schedule", "huber_c")
def test_huber_c_follows_each_schedule(alphas):
    # get_timesteps_and_huber_c: constant c0; exponential exp(-a t), a = -ln(c0)/1000;
    # snr (1 - c0)/(1 + sigma_t)^2 + c0, sigma_t = sqrt((1 - ab_t)/ab_t).
    c0 = 0.3
    assert huber_c(T, "constant", c0, alphas).tolist() == pytest.approx([c0] * 3)
    expected = [math.exp(math.log(c0) / 1000 * t) for t in (0, 250, 999)]
    assert huber_c(T, "exponential", c0, alphas).tolist() == pytest.approx(expected, rel=1e-6)
    snr_expected = []
    for t in (0, 250, 999):
        ab = float(alphas[t])
        sigma = math.sqrt((1 - ab) / ab)
        snr_expected.append((1 - c0) / (1 + sigma) ** 2 + c0)
    assert huber_c(T, "snr", c0, alphas).tolist() == pytest.approx(snr_expected, rel=1e-5)
    # The payload reaches the config; 0 is unset = sd-scripts' default 0.1.
    assert config(huber_c=0.3, huber_schedule="constant").huber_c == 0.3
    assert config(huber_c=0).huber_c == 0.1


@shows_effect("loss_type")
def test_huber_and_smooth_l1_elements_follow_conditional_loss():
    p = torch.tensor([0.0, 1.0, -3.0, 0.5]).view(4, 1, 1, 1)
    y = torch.zeros_like(p)
    c = torch.tensor([0.1, 0.1, 0.5, 1.0])
    d = p.flatten()
    l2 = d**2
    huber = 2 * c * (torch.sqrt(d**2 + c**2) - c)
    smooth = 2 * (torch.sqrt(d**2 + c**2) - c)
    assert element_loss(p, y, "l2").flatten().tolist() == pytest.approx(l2.tolist())
    assert element_loss(p, y, "huber", c).flatten().tolist() == pytest.approx(huber.tolist())
    assert element_loss(p, y, "smooth_l1", c).flatten().tolist() == pytest.approx(smooth.tolist())
    # Huber is quadratic near 0 (about d^2) and linear far out (about 2c|d|).
    small = element_loss(torch.full((1, 1, 1, 1), 1e-3), torch.zeros(1, 1, 1, 1), "huber",
                         torch.tensor([0.1]))  # fmt: skip
    assert float(small) == pytest.approx(1e-6, rel=1e-2)  # fp32, as sd-scripts computes it
    assert config(loss_type="huber").loss_type == "huber"


def test_per_sample_loss_averages_masked_elements_over_chw():
    # train_network.py: conditional_loss(reduction="none") -> apply_masked_loss -> mean([1,2,3]):
    # masked-out elements still count in the mean.
    prediction = torch.ones(2, 4, 2, 2)
    target = torch.zeros(2, 4, 2, 2)
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, :, :8] = 1.0  # left half of sample 0
    loss = per_sample_loss(prediction, target, "l2", mask=mask)
    assert loss.tolist() == pytest.approx([0.5, 0.0])


def test_mask_is_area_averaged_to_the_latent_size():
    # apply_masked_loss: interpolate(mask, size=loss.shape[2:], mode="area"): each latent
    # element weighs the mean of its 8x8 pixel block.
    mask = torch.zeros(1, 1, 16, 8)
    mask[0, 0, :4, :] = 1.0  # top quarter
    loss = per_sample_loss(torch.ones(1, 1, 2, 1), torch.zeros(1, 1, 2, 1), "l2", mask=mask)
    assert float(loss) == pytest.approx((0.5 + 0.0) / 2)


def _rgba(path: Path, size: tuple[int, int], alpha_left: int, alpha_right: int) -> None:
    w, h = size
    alpha = np.zeros((h, w), dtype=np.uint8)
    alpha[:, : w // 2], alpha[:, w // 2 :] = alpha_left, alpha_right
    rgba = np.dstack([np.full((h, w, 3), 128, np.uint8), alpha])
    Image.fromarray(rgba, "RGBA").save(path)


@shows_effect("masked_loss")
def test_masked_loss_weighs_elements_by_the_alpha_channel(tmp_path):
    folder = tmp_path / "1_x"
    folder.mkdir()
    _rgba(folder / "a.png", (64, 64), 255, 0)
    Image.new("RGB", (64, 64)).save(folder / "b.png")
    scan = scan_dataset(tmp_path, ".txt")
    a, b = (TrainingImage(r, (64, 64), (64, 64), (0, 0)) for r in scan.images)
    assert (a.record.has_alpha, b.record.has_alpha) == (True, False)
    mask = alpha_mask(a, PLAIN)  # load_image(alpha=True): alpha / 255
    assert mask[:, :32].unique().tolist() == [1.0] and mask[:, 32:].unique().tolist() == [0.0]
    flipped = alpha_mask(a, Augmentation(flipped=True))  # mirrored with the pixels
    assert torch.equal(flipped, mask.flip(1))
    assert torch.equal(alpha_mask(b, PLAIN), torch.ones(64, 64))  # no alpha: ones
    assert batch_masks([b, b], [PLAIN, PLAIN]) is None  # nothing to mask
    masks = batch_masks([a, b], [PLAIN, PLAIN])
    assert masks is not None and masks.shape == (2, 1, 64, 64)
    loss = per_sample_loss(torch.ones(2, 4, 8, 8), torch.zeros(2, 4, 8, 8), "l2", mask=masks)
    assert loss.tolist() == pytest.approx([0.5, 1.0])
    assert config(masked_loss=True).masked_loss


def test_the_mask_is_resized_and_cropped_with_the_pixels(tmp_path):
    # A 128x64 image in a 64x64 bucket: shrunk to 128x64? No: resized to (128, 64) is its
    # size; the centre crop keeps x 32..96, whose left half is opaque, right half clear.
    path = tmp_path / "w.png"
    _rgba(path, (128, 64), 255, 0)
    record = ImageRecord(path, "", (128, 64), "1_x", 1, has_alpha=True)
    image = TrainingImage(record, (64, 64), (128, 64), (0, 32))
    mask = alpha_mask(image, PLAIN)
    assert mask[:, :32].unique().tolist() == [1.0] and mask[:, 32:].unique().tolist() == [0.0]
    cropped_left = alpha_mask(image, Augmentation(crop_left_top=(0, 0)))
    assert cropped_left.unique().tolist() == [1.0]


@shows_effect("debiased_estimation_loss")
def test_debiased_weight_with_v_prediction_is_one_over_snr_plus_one():
    # apply_debiased_estimation at sd-scripts main: v-pred 1/(SNR'+1), else 1/sqrt(SNR'),
    # SNR' = min(SNR, 1000).
    snr = torch.tensor([4000.0, 3.0, 0.01])
    capped = [1000.0, 3.0, 0.01]
    assert debiased_weight(snr, True).tolist() == pytest.approx([1 / (s + 1) for s in capped])
    assert debiased_weight(snr).tolist() == pytest.approx([1 / math.sqrt(s) for s in capped])
    weights = loss_weights(snr, None, True, v_prediction=True)
    assert weights.tolist() == pytest.approx([1 / (s + 1) for s in capped])


def test_debiased_weights_of_the_schedule(alphas):
    snr = all_snr(alphas)[[500]]
    assert float(debiased_weight(snr, True)) == pytest.approx(1 / (float(snr[0]) + 1))


@shows_effect("min_timestep", "max_timestep")
def test_equal_min_and_max_timestep_train_at_that_timestep():
    # get_timesteps (sd-scripts main): torch.full((b,), max_timestep) when min == max.
    c = config(min_timestep=500, max_timestep=500)
    assert sample_timesteps(4, c.min_timestep, 500, None).tolist() == [500] * 4
    with pytest.raises(PayloadError, match="0-999"):
        config(min_timestep=1000, max_timestep=1000)
    with pytest.raises(PayloadError, match="must not be above"):
        config(min_timestep=600, max_timestep=500)
    # max_timestep 0 is unset (the GUI drops it): 1000.
    assert config(max_timestep=0).max_timestep is None


def test_the_step_uses_the_configured_loss_and_mask(tmp_path, alphas):
    # trainer.step.prediction_loss: conditional_loss -> apply_masked_loss -> mean, per sample.
    folder = tmp_path / "1_x"
    folder.mkdir()
    _rgba(folder / "a.png", (64, 64), 255, 0)
    (record,) = scan_dataset(tmp_path, ".txt").images
    image = TrainingImage(record, (64, 64), (64, 64), (0, 0))
    c = config(loss_type="huber", huber_schedule="constant", huber_c=0.5, masked_loss=True)
    session = SimpleNamespace(
        config=c, images=[image], cached_alphas=None,
        model=SimpleNamespace(noise_scheduler=SimpleNamespace(alphas_cumprod=alphas)),
    )  # fmt: skip
    prediction, target = torch.full((1, 4, 8, 8), 2.0), torch.zeros(1, 4, 8, 8)
    loss = prediction_loss(session, Batch((64, 64), (0,)), prediction, target,  # type: ignore[arg-type]
                           torch.tensor([10]), [PLAIN])  # fmt: skip
    element = 2 * 0.5 * (math.sqrt(4 + 0.25) - 0.5)
    assert float(loss[0]) == pytest.approx(element * 0.5)  # half the image is transparent
