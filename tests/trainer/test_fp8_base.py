"""fp8_base: the frozen base lives in float8_e4m3fn, computes in the mixed-precision dtype."""

from __future__ import annotations

import pytest
import torch

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import PayloadError, parse_payload
from trainer.data.batches import epoch_batches
from trainer.data.folders import scan_dataset
from trainer.hooks import null_reporter
from trainer.loop import optimizer_step
from trainer.models.fp8 import stored_dtype
from trainer.models.loading import load_sdxl
from trainer.plan import plan_from_scan
from trainer.run import TrainingJob, build_session
from trainer.step import training_loss

FP8 = torch.float8_e4m3fn


def config(**overrides):
    return parse_payload(tiny_payload(**overrides)).config


def unet_inputs():
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 77, 96, generator=generator)
    cond = {
        "text_embeds": torch.randn(2, 64, generator=generator),
        "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2),
    }
    return sample, torch.tensor([500, 200]), context, cond


def test_fp8_base_needs_fp16_or_bf16_mixed_precision():
    with pytest.raises(PayloadError) as caught:
        parse_payload(tiny_payload(fp8_base=True, mixed_precision="no"))
    (problem,) = caught.value.problems
    assert problem.field == "fp8_base" and "mixed_precision" in problem.message
    assert config(fp8_base=True, mixed_precision="bf16").fp8_base


@shows_effect("fp8_base")
def test_fp8_base_stores_the_frozen_weights_in_fp8_and_still_trains(
    tiny_model, toy_dataset, tmp_path
):
    c = config(fp8_base=True, mixed_precision="bf16", max_train_steps=2, unet_lr=1e-3)
    scan = scan_dataset(toy_dataset, c.caption_extension)
    job = TrainingJob(c, tiny_model, toy_dataset, tmp_path)
    s = build_session(job, scan, plan_from_scan(c, scan), null_reporter, seed=0)
    unet, te1, te2 = s.model.unet, s.model.text_encoder, s.model.text_encoder_2
    attention = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    assert stored_dtype(attention.to_q.base_layer) == FP8
    assert attention.to_q.base_layer.weight.dtype == torch.bfloat16  # each access: a copy
    assert stored_dtype(unet.down_blocks[0].resnets[0].conv1) == FP8
    assert unet.down_blocks[0].resnets[0].norm1.weight.dtype == torch.bfloat16  # norms skipped
    for encoder in (te1, te2):
        weights = dict(encoder.named_parameters())
        for name in ("layers.0.self_attn.q_proj.base_layer", "layers.0.mlp.fc1.base_layer"):
            (key,) = [
                k for k in weights if k.endswith(f"encoder.{name}.parametrizations.weight.original")
            ]
            assert weights[key].dtype == FP8
        (key,) = [k for k in weights if k.endswith("embeddings.token_embedding.weight")]
        assert weights[key].dtype == torch.bfloat16  # embeddings stay out, as in sd-scripts
    assert {p.dtype for p in s.network.parameters()} == {torch.float32}
    assert s.metadata["ss_fp8_base"] == "True"

    # Each layer is upcast for its forward: the fp8 UNet computes what the bf16 one
    # does, up to fp8's 3-bit mantissa (checked with the LoRA branch still zero).
    plain = load_sdxl(tiny_model).unet.to(torch.bfloat16).eval()
    sample, timesteps, context, cond = unet_inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = plain(sample, timesteps, context, added_cond_kwargs=cond).sample.float()
        stored = unet(sample, timesteps, context, added_cond_kwargs=cond).sample.float()
    cosine = torch.nn.functional.cosine_similarity(reference.flatten(), stored.flatten(), dim=0)
    assert 0.98 < float(cosine) < 1.0
    assert plain.down_blocks[0].resnets[0].conv1.weight.dtype == torch.bfloat16  # without it

    for batch in epoch_batches(s.images, c.train_batch_size, 0, 1)[:2]:
        loss = training_loss(s, batch)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer_step(s)
    ups = [module.up for module in s.network.modules if module.part == "unet"]
    assert all(up.dtype == torch.float32 for up in ups)
    assert sum(float(up.detach().abs().sum()) for up in ups) > 0  # the LoRA learnt
    assert stored_dtype(attention.to_q.base_layer) == FP8  # and the base stayed fp8
