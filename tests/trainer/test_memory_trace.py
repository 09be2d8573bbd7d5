"""The traced step (trainer/estimate): CUDA autocast's rules on a CPU, a toy trace whose
weights are known to the byte, and full-size SDXL traces that move the way memory must and
that the torch-free fitted model (trainer/estimate/model.py) agrees with."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from bench.memory_model import GRID
from tests.factories import seed_payload
from trainer.config import TrainingConfig, parse_payload
from trainer.estimate.architecture import Architecture
from trainer.estimate.autocast import FP32, FP32_SET_OPT_DTYPE, PROMOTE, cuda_autocast_rules
from trainer.estimate.fake import prepared_meta_model
from trainer.estimate.model import Footprint, estimate_footprint
from trainer.estimate.trace import PARTS, StepTrace, trace_step
from trainer.estimate.trace_caching import trace_latent_caching
from trainer.models.configs import SDXL_BASE_CONFIG

HEADER = Path(torch.__file__).parent / "include" / "ATen" / "autocast_mode.h"


def _header_list(macro: str) -> tuple[str, ...]:
    """The ops of ``#define macro(_) _(op) _(op, overload) ...`` as "op" / "op.overload"."""
    body = HEADER.read_text().split(f"#define {macro}(_)", 1)[1].split("\n\n", 1)[0]
    entries = re.findall(r"_\(([^)]*)\)", body)
    return tuple(".".join(part.strip() for part in entry.split(",")) for entry in entries)


@pytest.mark.skipif(not HEADER.exists(), reason="this torch ships no C++ headers")
def test_the_cuda_op_lists_are_the_installed_torchs():
    assert _header_list("AT_FORALL_FP32") == FP32
    assert _header_list("AT_FORALL_FP32_SET_OPT_DTYPE") == FP32_SET_OPT_DTYPE
    assert _header_list("AT_FORALL_PROMOTE") == PROMOTE


def test_cpu_autocast_casts_like_cuda_inside_the_rules_and_like_cpu_after():
    with FakeTensorMode(), cuda_autocast_rules() as taken:
        x = torch.empty(2, 8, 4, 4, dtype=torch.float16, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.float16):
            norm = torch.nn.functional.group_norm(x, 4)
            up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            soft = x.softmax(-1)
            conv = torch.nn.functional.conv2d(norm, torch.empty(8, 8, 3, 3))
        conv.float().sum().backward()  # the fp32 casts are on the autograd graph
        assert (norm.dtype, up.dtype, soft.dtype, conv.dtype) == (torch.float32,) * 3 + (
            torch.float16,
        )
        assert x.grad is not None and x.grad.dtype == torch.float16
    assert {"group_norm", "layer_norm", "upsample_nearest2d", "softmax.int"} <= set(taken)
    with torch.autocast("cpu", dtype=torch.float16):  # the registrations are gone
        assert torch.nn.functional.group_norm(torch.ones(1, 4, 2, 2).half(), 2).dtype == (
            torch.float16
        )


def _config(**overrides: object) -> TrainingConfig:
    return parse_payload({**seed_payload(), **overrides}).config


@pytest.mark.slow
def test_a_toy_trace_counts_the_prepared_weights_to_the_byte(tiny_config_dir: Path):
    config = _config(max_resolution="128,128", min_bucket_reso=64, train_batch_size=2)
    trace = trace_step(config, base=tiny_config_dir)
    meta = prepared_meta_model(config, tiny_config_dir)  # fp16 UNet and encoders, fp32 VAE
    # With latents cached the VAE waits on the host (trainer.placement): not counted.
    parts = (meta.model.unet, meta.model.text_encoder, meta.model.text_encoder_2)
    tensors = [t for part in parts for t in (*part.parameters(), *part.buffers())]
    lora = 4 * meta.network.parameter_count()
    assert trace.parts["weights"] == sum(t.numel() * t.element_size() for t in tensors) - lora
    assert trace.parts["lora"] == lora
    assert sum(trace.parts.values()) == trace.peak_bytes
    assert trace.parts["optimizer"] > 0 and trace.step_flops > 0
    # The torch-free model counts the miniature's weights, LoRA, optimizer state and FLOPs
    # exactly as well (its activations are fitted to full-size traces only).
    model = estimate_footprint(config, Architecture.from_config_dir(tiny_config_dir)).at("step")
    for part in ("weights", "lora", "optimizer"):
        assert model.parts[part] == trace.parts[part], part
    assert abs(model.step_flops - trace.step_flops) <= 0.01 * trace.step_flops


# Full size: three of the grid's small payloads (bench/memory_model.py: SMALL, which traces
# the whole grid), each traced once for every test that reads it (~20 s each on CPU).
VARIANTS = ("small", "small_batch2", "small_checkpointing")


@cache
def full_size(variant: str) -> StepTrace:
    return trace_step(_config(**GRID[variant]))


@cache
def modelled(variant: str) -> Footprint:
    return estimate_footprint(
        _config(**GRID[variant]), Architecture.from_config_dir(SDXL_BASE_CONFIG)
    ).at("step")  # the traced phase


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_full_size_parts_add_up_to_the_peak(variant: str):
    trace = full_size(variant)
    assert set(trace.parts) == set(PARTS)
    assert sum(trace.parts.values()) == trace.peak_bytes
    # Only the fp16 UNet (2.57 G parameters, 4.78 GiB) stays on the device: latents and
    # text-encoder outputs are cached (trainer.placement).
    assert trace.parts["weights"] == modelled(variant).parts["weights"]
    assert 4.7 * 2**30 < trace.parts["weights"] < 4.9 * 2**30


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_fitted_model_agrees_with_the_trace(variant: str):
    trace, model = full_size(variant), modelled(variant)
    assert abs(model.peak_bytes - trace.peak_bytes) <= 0.05 * trace.peak_bytes
    traced = trace.parts["activations"] + trace.parts["temporaries"]
    estimated = model.parts["activations"] + model.parts["temporaries"]
    assert abs(estimated - traced) <= 0.10 * traced
    for part in ("weights", "lora", "optimizer"):  # counted, not fitted: to the byte
        assert model.parts[part] == trace.parts[part], part
    assert abs(model.step_flops - trace.step_flops) <= 0.01 * trace.step_flops


@pytest.mark.slow
def test_full_size_peak_grows_with_batch_and_rank_and_checkpointing_lowers_it():
    base, batch2 = full_size("small"), full_size("small_batch2")
    checkpointed = full_size("small_checkpointing")
    assert batch2.peak_bytes > base.peak_bytes
    assert batch2.parts["activations"] > 1.5 * base.parts["activations"]
    # Rank from the fitted model, which the traces above hold to the byte on the LoRA and
    # optimizer parts (a fourth trace would add ~20 s to CI; bench/memory_model.py traces it).
    rank32 = modelled("small_rank32")
    assert rank32.parts["lora"] == 4 * modelled("small").parts["lora"]
    assert rank32.peak_bytes > modelled("small").peak_bytes
    assert checkpointed.peak_bytes < base.peak_bytes
    assert checkpointed.parts["activations"] < base.parts["activations"] / 2


@pytest.mark.slow
def test_full_size_flops_grow_with_batch_and_checkpointing_recomputes():
    base, batch2 = full_size("small"), full_size("small_batch2")
    assert 1.8 < batch2.step_flops / base.step_flops <= 2.0
    assert full_size("small_checkpointing").step_flops > 1.2 * base.step_flops


@pytest.mark.slow
def test_caching_latents_is_traced_with_the_vae_alone_and_modelled():
    # Batch 1 at 1024²: the VAE encodes the bucket before the UNet and the encoders reach
    # the device (trainer.run.prepare_model / place_for_steps), so the step is the peak.
    config = _config(train_batch_size=1)
    traced = trace_latent_caching(config)
    arch = Architecture.from_config_dir(SDXL_BASE_CONFIG)
    footprint = estimate_footprint(config, arch)
    modelled_parts = footprint.phases["caching_latents"]
    for part, value in traced.parts.items():
        assert abs(modelled_parts[part] - value) <= 0.01 * traced.peak_bytes, part
    assert traced.parts["weights"] == 4 * arch.parameter_counts()["vae"]  # no UNet, no TEs
    assert footprint.at("caching_latents").peak_bytes >= 0.99 * traced.peak_bytes
    assert footprint.phase == "step" and footprint.peak_bytes > 2 * traced.peak_bytes
