"""Noise, timesteps and loss weighting (sd-scripts, reference §5) as pure functions."""

from __future__ import annotations

import torch

SNR_CAP = 1000.0  # sd-scripts caps SNR at 1000 for the debiased weight


def all_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SNR_t = alpha_bar_t / (1 - alpha_bar_t) for every training timestep."""
    return alphas_cumprod / (1.0 - alphas_cumprod)


def offset_noise(
    noise: torch.Tensor, offset: float, random_strength: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Add a per-(sample, channel) constant shift: eps + o * N(0, 1)[B, C, 1, 1].

    With ``random_strength`` the offset is scaled by one U(0, 1) draw per batch.
    """
    if offset == 0:
        return noise
    strength = offset
    if random_strength:
        strength = offset * torch.rand(1, generator=generator).item()
    shift = torch.randn(noise.shape[0], noise.shape[1], 1, 1, generator=generator)
    return noise + strength * shift.to(noise.device, noise.dtype)


def sample_timesteps(
    batch: int, min_timestep: int, max_timestep: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Uniform integers in [min_timestep, max_timestep), one per sample."""
    return torch.randint(min_timestep, max_timestep, (batch,), generator=generator)


def min_snr_weight(snr: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma for epsilon prediction: min(SNR, gamma) / SNR."""
    return torch.clamp(snr, max=gamma) / snr


def debiased_weight(snr: torch.Tensor) -> torch.Tensor:
    """Debiased estimation: 1 / sqrt(min(SNR, 1000))."""
    return 1.0 / torch.sqrt(torch.clamp(snr, max=SNR_CAP))


def loss_weights(snr: torch.Tensor, min_snr_gamma: float | None, debiased: bool) -> torch.Tensor:
    """Per-sample weights applied in sd-scripts' order."""
    weight = torch.ones_like(snr)
    if min_snr_gamma:
        weight = weight * min_snr_weight(snr, min_snr_gamma)
    if debiased:
        weight = weight * debiased_weight(snr)
    return weight


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over (C, H, W), in fp32 whatever the model's dtype."""
    error = (prediction.float() - target.float()) ** 2
    return error.mean(dim=(1, 2, 3))
