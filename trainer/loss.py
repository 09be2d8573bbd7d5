"""Noise, timesteps, the element loss and loss weighting as pure functions.

As sd-scripts: ``library/custom_train_functions.py`` (``apply_noise_offset``,
``pyramid_noise_like``, the SNR weights, ``apply_masked_loss``) and ``library/train_util.py``
(``get_noise_noisy_latents_and_timesteps``, ``get_timesteps_and_huber_c``,
``conditional_loss``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SNR_CAP = 1000.0  # sd-scripts caps SNR at 1000 for the debiased weight


def all_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SNR_t = alpha_bar_t / (1 - alpha_bar_t) for every training timestep."""
    return alphas_cumprod / (1.0 - alphas_cumprod)


def offset_noise(
    noise: torch.Tensor,
    offset: float,
    random_strength: bool,
    generator: torch.Generator | None,
    latents: torch.Tensor | None = None,
    adaptive_scale: float = 0.0,
) -> torch.Tensor:
    """Add a per-(sample, channel) constant shift: eps + o * N(0, 1)[B, C, 1, 1].

    With ``random_strength`` the offset is scaled by one U(0, 1) draw per batch.
    With ``adaptive_scale`` a (needs ``latents``) each (sample, channel) gets
    o + a * |mean_hw(latents)|, clamped at 0 (sd-scripts ``apply_noise_offset``).
    """
    if offset == 0:
        return noise
    strength: float | torch.Tensor = offset
    if random_strength:
        strength = offset * torch.rand(1, generator=generator).item()
    if adaptive_scale and latents is not None:
        mean = latents.float().mean(dim=(2, 3), keepdim=True).abs()
        strength = torch.clamp(strength + adaptive_scale * mean, min=0.0).to(noise.device)
    shift = torch.randn(noise.shape[0], noise.shape[1], 1, 1, generator=generator)
    return noise + strength * shift.to(noise.device, noise.dtype)


def multires_noise(
    noise: torch.Tensor, iterations: int, discount: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Pyramid noise (sd-scripts ``pyramid_noise_like``), rescaled to unit std.

    For i = 0..n-1: r ~ U(2, 4); add N(0,1) of size (h/r^i, w/r^i), upsampled
    bilinearly, times discount^i; stop after the 1-pixel level.
    """
    if iterations <= 0:
        return noise
    batch, channels, height, width = noise.shape
    result = noise.float().clone()
    for i in range(iterations):
        r = 2.0 + 2.0 * torch.rand(1, generator=generator).item()
        h, w = max(1, int(height / r**i)), max(1, int(width / r**i))
        level = torch.randn(batch, channels, h, w, generator=generator).to(noise.device)
        up = F.interpolate(level, size=(height, width), mode="bilinear")
        result = result + up * discount**i
        if h == 1 or w == 1:
            break
    return (result / result.std()).to(noise.dtype)


def input_perturbation(
    noise: torch.Tensor, gamma: float, random_strength: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """The noise that makes the noisy latents: eps + gamma * N(0, 1) (the target keeps eps).

    With ``random_strength`` gamma is scaled by one U(0, 1) draw per batch.
    """
    if gamma == 0:
        return noise
    strength = gamma
    if random_strength:
        strength = gamma * torch.rand(1, generator=generator).item()
    extra = torch.randn(noise.shape, generator=generator).to(noise.device, noise.dtype)
    return noise + strength * extra


def velocity(
    latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod_t: torch.Tensor
) -> torch.Tensor:
    """The v-prediction target: v = sqrt(ab_t) * eps - sqrt(1 - ab_t) * x0."""
    ab = alphas_cumprod_t.to(latents.device, torch.float32).view(-1, 1, 1, 1)
    return ab.sqrt() * noise.float() - (1.0 - ab).sqrt() * latents.float()


def sample_timesteps(
    batch: int, min_timestep: int, max_timestep: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Uniform integers in [min_timestep, max_timestep), one per sample; every sample at
    ``max_timestep`` when the two are equal (sd-scripts main ``library/train_util.py:
    get_timesteps``; the GUI's commit crashes there)."""
    if min_timestep >= max_timestep:
        return torch.full((batch,), max_timestep, dtype=torch.long)
    return torch.randint(min_timestep, max_timestep, (batch,), generator=generator)


def min_snr_weight(snr: torch.Tensor, gamma: float, v_prediction: bool = False) -> torch.Tensor:
    """Min-SNR-gamma: min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v-prediction."""
    return torch.clamp(snr, max=gamma) / (snr + 1 if v_prediction else snr)


def v_pred_scale(snr: torch.Tensor) -> torch.Tensor:
    """s_t = SNR' / (SNR' + 1) with SNR' = min(SNR, 1000) (sd-scripts ``get_snr_scale``)."""
    capped = torch.clamp(snr, max=SNR_CAP)
    return capped / (capped + 1)


def debiased_weight(snr: torch.Tensor, v_prediction: bool = False) -> torch.Tensor:
    """Debiased estimation with SNR' = min(SNR, 1000): 1 / sqrt(SNR'), or 1 / (SNR' + 1)
    for v-prediction (sd-scripts main ``apply_debiased_estimation``; the GUI's commit used
    1 / sqrt(SNR') for both)."""
    capped = torch.clamp(snr, max=SNR_CAP)
    return 1.0 / (capped + 1) if v_prediction else 1.0 / torch.sqrt(capped)


def loss_weights(
    snr: torch.Tensor,
    min_snr_gamma: float | None,
    debiased: bool,
    *,
    v_prediction: bool = False,
    scale_v_pred_like_noise_pred: bool = False,
    v_pred_like_loss: float = 0.0,
) -> torch.Tensor:
    """Per-sample weights in the order sd-scripts applies them (``train_network.py:
    NetworkTrainer.train``): min-SNR, v-pred scaling, v-pred-like loss, debiased.

    ``v_pred_like_loss`` k adds k * loss / s_t, i.e. weighs the loss by (1 + k / s_t).
    """
    weight = torch.ones_like(snr)
    if min_snr_gamma:
        weight = weight * min_snr_weight(snr, min_snr_gamma, v_prediction)
    if scale_v_pred_like_noise_pred:
        weight = weight * v_pred_scale(snr)
    if v_pred_like_loss:
        weight = weight * (1.0 + v_pred_like_loss / v_pred_scale(snr))
    if debiased:
        weight = weight * debiased_weight(snr, v_prediction)
    return weight


def prior_weights(is_reg: list[bool], prior_loss_weight: float) -> torch.Tensor:
    """Per-sample loss weight: ``prior_loss_weight`` for regularization images, else 1."""
    return torch.tensor([prior_loss_weight if reg else 1.0 for reg in is_reg])


def huber_c(
    timesteps: torch.Tensor, schedule: str, c0: float, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """The Huber parameter of each sample's timestep t (sd-scripts ``get_timesteps_and_huber_c``):
    constant c0; exponential exp(-a t) with a = -ln(c0) / T; snr (1 - c0) / (1 + s_t)^2 + c0
    with s_t = sqrt((1 - ab_t) / ab_t). T = 1000 training timesteps."""
    t = timesteps.cpu()
    if schedule == "constant":
        return torch.full(t.shape, c0, dtype=torch.float32)
    if schedule == "exponential":
        alpha = -math.log(c0) / alphas_cumprod.shape[0]
        return torch.exp(-alpha * t.float())
    ab = alphas_cumprod.cpu()[t].float()
    sigmas = ((1.0 - ab) / ab) ** 0.5
    return (1 - c0) / (1 + sigmas) ** 2 + c0


def element_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    loss_type: str = "l2",
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """sd-scripts ``conditional_loss`` with reduction "none", in fp32: l2 (p - y)^2;
    huber 2c(sqrt((p - y)^2 + c^2) - c); smooth_l1 2(sqrt((p - y)^2 + c^2) - c); ``c`` holds
    one value per sample."""
    error = prediction.float() - target.float()
    if loss_type == "l2":
        return error**2
    assert c is not None, "huber and smooth_l1 need the per-sample c"
    c = c.to(error.device, torch.float32).view(-1, *([1] * (error.ndim - 1)))
    smooth = torch.sqrt(error**2 + c**2) - c
    return 2 * c * smooth if loss_type == "huber" else 2 * smooth


def apply_mask(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sd-scripts ``apply_masked_loss``: the (B, 1, H, W) mask in [0, 1], area-averaged to the
    loss's (h, w), times the element loss. Averaged where the mask is (the host, for the
    trainer's masks) and then moved: only the latent-sized mask reaches the device."""
    mask = F.interpolate(mask.to(dtype=loss.dtype), size=loss.shape[2:], mode="area")
    return loss * mask.to(loss.device)


def per_sample_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    loss_type: str = "l2",
    c: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The element loss (masked if a mask is given) averaged over (C, H, W), as
    ``train_network.py: NetworkTrainer.train`` reduces it (masked elements still count)."""
    loss = element_loss(prediction, target, loss_type, c)
    if mask is not None:
        loss = apply_mask(loss, mask)
    return loss.mean(dim=(1, 2, 3))


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over (C, H, W), in fp32 whatever the model's dtype."""
    return per_sample_loss(prediction, target)
