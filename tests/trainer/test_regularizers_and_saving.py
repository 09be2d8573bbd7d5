"""Caption dropout, Kohya's LoRA dropouts and max-norm, text-encoder stop, step saves."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.data.batches import Batch
from trainer.data.captions import drops_caption
from trainer.data.folders import ImageRecord
from trainer.hooks import StepCompleted
from trainer.lora.network import apply_lora
from trainer.lora.regularizers import Dropouts, apply_max_norm, drop_down_output, install_dropouts
from trainer.models.loading import load_sdxl
from trainer.plan import text_encoder_stop_step
from trainer.run import TrainingJob, build_network, train
from trainer.saving import step_to_remove
from trainer.step import batch_captions


def config(**overrides):
    return parse_payload(tiny_payload(**overrides)).config


@shows_effect("caption_dropout_every_n_epochs")
def test_every_caption_is_dropped_in_every_nth_epoch():
    rng = random.Random(0)
    assert [drops_caption(0.0, 3, epoch, rng) for epoch in range(1, 7)] == [
        False,
        False,
        True,
        False,
        False,
        True,
    ]


@shows_effect("caption_dropout_rate")
def test_caption_dropout_rate_empties_that_share_of_captions():
    images = [
        SimpleNamespace(record=ImageRecord(Path(f"{i}.png"), f"tag{i}, b", (64, 64), "1_x", 1))
        for i in range(400)
    ]
    s = SimpleNamespace(
        config=config(caption_dropout_rate=0.25, shuffle_caption=False),
        images=images,
        caption_rng=random.Random(3),
    )
    captions = batch_captions(s, Batch((64, 64), tuple(range(400))), epoch=1)
    dropped = captions.count("")
    assert 70 <= dropped <= 130  # 25% of 400, with room for chance
    assert all(c in ("", f"tag{i}, b") for i, c in enumerate(captions))
    s.config = config(caption_dropout_rate=0, shuffle_caption=False)
    assert "" not in batch_captions(s, Batch((64, 64), tuple(range(400))), epoch=1)


@shows_effect("network_dropout")
def test_network_dropout_drops_the_down_output_and_rescales():
    down = torch.ones(8, 5, 16)
    torch.manual_seed(0)
    dropped = drop_down_output(down, Dropouts(network=0.5))
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    assert 0.35 < float((dropped == 0).float().mean()) < 0.65


@shows_effect("rank_dropout")
def test_rank_dropout_masks_whole_ranks_per_sample_and_rescales():
    down = torch.randn(4, 7, 8)  # (batch, tokens, rank)
    torch.manual_seed(1)
    dropped = drop_down_output(down, Dropouts(rank=0.25))
    torch.manual_seed(1)
    keep = (torch.rand(4, 8) > 0.25).float().unsqueeze(1)
    assert torch.allclose(dropped, down * keep / 0.75)
    conv = torch.randn(2, 8)  # (batch, rank): no token axis
    torch.manual_seed(1)
    expected = conv * (torch.rand(2, 8) > 0.25).float() / 0.75
    torch.manual_seed(1)
    assert torch.allclose(drop_down_output(conv, Dropouts(rank=0.25)), expected)


class _Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        block = torch.nn.Module()
        block.mlp = torch.nn.Module()
        block.mlp.fc1 = torch.nn.Linear(6, 6)
        self.layers = torch.nn.ModuleList([block])

    def forward(self, x):
        return self.layers[0].mlp.fc1(x)


def lora_encoders(rank: int = 4, alpha: float = 4.0):
    torch.manual_seed(0)
    encoders = (_Encoder(), _Encoder())
    network = apply_lora(None, encoders, rank, alpha)
    with torch.no_grad():
        for module in network.modules:
            module.up.normal_()
    return encoders, network


@shows_effect("module_dropout")
def test_module_dropout_skips_the_lora_branch_only_in_training():
    (encoder, _), network = lora_encoders()
    x = torch.randn(3, 6)
    with torch.no_grad():
        with_lora = encoder(x)
        base = encoder.layers[0].mlp.fc1.base_layer(x)
    assert install_dropouts(network, Dropouts(module=1.0)) == 2
    encoder.train()
    with torch.no_grad():
        assert torch.allclose(encoder(x), base)
        encoder.eval()
        assert torch.allclose(encoder(x), with_lora)


@shows_effect("scale_weight_norms")
def test_max_norm_scales_large_updates_down_to_the_limit():
    _, network = lora_encoders(rank=4, alpha=2.0)
    with torch.no_grad():
        network.modules[1].up.mul_(1e-4)  # a small module stays as it is
    norms = [float((m.up @ m.down).norm()) * 0.5 for m in network.modules]
    limit = (norms[0] + norms[1]) / 2
    assert norms[1] < limit / 2 < limit < norms[0]
    small_before = network.modules[1].up.clone()
    report = apply_max_norm(network, limit)
    after = [float((m.up @ m.down).norm()) * 0.5 for m in network.modules]
    assert after[0] == pytest.approx(limit, rel=1e-5)
    assert torch.equal(network.modules[1].up, small_before)
    assert report.keys_scaled == 1
    assert report.max_key_norm == pytest.approx(limit, rel=1e-5)
    assert report.average_key_norm == pytest.approx((limit + norms[1]) / 2, rel=1e-5)


def test_text_encoder_stop_step_follows_the_gui_formula():
    assert text_encoder_stop_step(0, 100) is None
    assert text_encoder_stop_step(-1, 100) == 0
    assert text_encoder_stop_step(25, 10) == 3  # ceil(10 / 100 * 25)
    assert text_encoder_stop_step(100, 10) == 10


def test_step_files_kept_by_save_last_n_steps_follow_sd_scripts():
    assert step_to_remove(10, 2, 4) == 4  # 10 - 4 - 1 = 5, floored to a multiple of 2
    assert step_to_remove(3, 1, 1) == 1
    assert step_to_remove(2, 1, 1) is None
    assert step_to_remove(10, 2, None) is None


@shows_effect("stop_text_encoder_training_pct", "save_every_n_steps", "save_last_n_steps")
def test_text_encoder_freezes_and_step_files_rotate(tiny_model, toy_dataset, tmp_path):
    common = dict(save_every_n_epochs=0, lr_scheduler="constant", lr_warmup=0)
    events: list = []
    run = config(
        max_train_steps=4, stop_text_encoder_training_pct=25, save_every_n_steps=1,
        save_last_n_steps=1, scale_weight_norms=5.0, **common,
    )  # fmt: skip
    frozen = train(TrainingJob(run, tiny_model, toy_dataset, tmp_path / "a"), events.append)
    one = config(max_train_steps=1, scale_weight_norms=5.0, **common)
    first = train(TrainingJob(one, tiny_model, toy_dataset, tmp_path / "b"))
    after_four, after_one = load_file(str(frozen.lora_path)), load_file(str(first.lora_path))
    te = [k for k in after_four if k.startswith("lora_te") and "lora_up" in k]
    unet = [k for k in after_four if k.startswith("lora_unet") and "lora_up" in k]
    # Step 1 = 25% of 4: the text-encoder LoRA keeps its step-1 weights, the UNet goes on.
    assert all(torch.equal(after_four[k], after_one[k]) for k in te)
    assert any(not torch.equal(after_four[k], after_one[k]) for k in unet)
    # Steps 1..3 were saved; keeping the last 1 step window leaves steps 2 and 3.
    assert sorted(p.name for p in (tmp_path / "a").glob("*.safetensors")) == [
        "toy-step00000002.safetensors",
        "toy-step00000003.safetensors",
        "toy.safetensors",
    ]
    reports = [e.max_norm for e in events if isinstance(e, StepCompleted)]
    assert all(r is not None and set(r) >= {"max_norm/keys_scaled"} for r in reports)


@shows_effect("full_bf16")
def test_full_bf16_keeps_the_lora_weights_in_bf16(tiny_model, toy_dataset, tmp_path):
    for full, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        c = config(mixed_precision="bf16", full_bf16=full)
        network = build_network(
            load_sdxl(tiny_model), TrainingJob(c, tiny_model, toy_dataset, tmp_path)
        )
        assert {p.dtype for p in network.parameters()} == {dtype}


@shows_effect("sdxl_cache_text_encoder_outputs")
def test_cached_text_outputs_replace_the_text_encoders_in_the_step(
    tiny_model, toy_dataset, tmp_path
):
    from trainer.data.folders import scan_dataset
    from trainer.hooks import null_reporter
    from trainer.plan import plan_from_scan
    from trainer.run import build_session
    from trainer.step import batch_conditioning

    sessions = {}
    for cached in (False, True):
        c = config(
            sdxl_cache_text_encoder_outputs=cached, text_encoder_lr=0, shuffle_caption=False,
            max_train_steps=1,
        )  # fmt: skip
        scan = scan_dataset(toy_dataset, c.caption_extension)
        job = TrainingJob(c, tiny_model, toy_dataset, tmp_path)
        sessions[cached] = build_session(job, scan, plan_from_scan(c, scan), null_reporter, 0)
    assert sessions[False].text_cache is None
    assert len(sessions[True].text_cache) == len(sessions[True].images)
    sessions[True].model.text_encoder = sessions[True].model.text_encoder_2 = None
    batch = Batch(sessions[True].images[0].bucket, (0, 1))
    with torch.no_grad():
        plain = batch_conditioning(sessions[False], batch)
        cached = batch_conditioning(sessions[True], batch)  # no encoder left to call
    for a, b in zip(plain, cached, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
