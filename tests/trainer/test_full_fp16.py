"""``full_fp16``: the LoRA weights themselves in fp16, their fp16 gradients loss-scaled.

sd-scripts (``train_network.py`` with ``--full_fp16``) casts the network to fp16 and patches
the accelerator's GradScaler to unscale fp16 gradients
(``library/train_util.py: patch_accelerator_for_fp16_training``). On a CPU the trainer
computes in fp32 (``trainer.run.resolve_precision``), so what a CPU shows is the weights'
dtype, the scaling and unscaling, and a run with finite losses; fp16 autocast on top of fp16
weights is a GPU's to show (bench/gpu_sdxl.py).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import parse_payload
from trainer.hooks import Event, StepCompleted
from trainer.run import TrainingJob, train
from trainer.scaling import Fp16GradScaler
from trainer.state.training_state import read_state_header


def backward(scaler: torch.amp.GradScaler, weight: torch.Tensor, grads: torch.Tensor) -> None:
    """A loss whose gradient for ``weight`` is ``grads``, scaled and backpropagated."""
    scaler.scale((weight.float() * grads).sum()).backward()


def test_fp16_gradients_are_unscaled_where_pytorchs_scaler_refuses():
    weight = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    scale = 1024.0
    grads = torch.tensor([1e-3, -2e-3, 0.5, 0.0])
    plain = torch.amp.GradScaler("cpu", init_scale=scale)
    backward(plain, weight, grads)
    with pytest.raises(ValueError, match="FP16 gradients"):
        plain.unscale_(torch.optim.SGD([weight], lr=1.0))
    weight.grad = None
    scaler = Fp16GradScaler("cpu", init_scale=scale)
    optimizer = torch.optim.SGD([weight], lr=1.0)
    backward(scaler, weight, grads)
    assert weight.grad is not None and weight.grad.dtype == torch.float16
    assert torch.equal(weight.grad, (grads * scale).half())
    scaler.unscale_(optimizer)
    # the scaled fp16 gradient times 1/scale, in place and still fp16
    assert torch.equal(weight.grad, ((grads * scale).half().float() / scale).half())
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == scale  # finite: stepped, scale kept (growth after 2000)
    assert torch.equal(weight.detach(), (1 - weight.grad.float()).half())
    # an overflowed fp16 gradient skips the step and halves the scale (backoff_factor 0.5)
    optimizer.zero_grad()
    before = weight.detach().clone()
    backward(scaler, weight, torch.tensor([1e3, 0, 0, 0]))  # 1e3 × 1024 > fp16's 65504
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(weight.detach(), before) and scaler.get_scale() == scale / 2


@pytest.mark.slow
@shows_effect("full_fp16")
def test_full_fp16_trains_fp16_weights_with_a_scaled_loss(tiny_model, toy_dataset, tmp_path):
    payload = tiny_payload(
        mixed_precision="fp16", full_fp16=True, optimizer="AdamW8bit", max_train_steps=2,
        train_batch_size=1, save_every_n_epochs=0, save_precision="float",
        save_state_on_train_end=True, unet_lr=1e-3, text_encoder_lr=1e-3, seed=3,
    )  # fmt: skip
    events: list[Event] = []
    config = parse_payload(payload).config
    train(TrainingJob(config, tiny_model, toy_dataset, tmp_path), reporter=events.append)
    losses = [e.loss for e in events if isinstance(e, StepCompleted)]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    state = load_file(str(tmp_path / "toy-state.safetensors"))
    weights = {k: v for k, v in state.items() if k.startswith("network.")}
    assert weights and {v.dtype for v in weights.values()} == {torch.float16}
    ups = [v for k, v in weights.items() if k.endswith("lora_up.weight")]
    assert any(v.abs().sum() > 0 for v in ups)  # stepped: lora_up starts at zero
    # the scaler's dynamic scale is part of the state, so a resume continues with it
    assert "scale" in read_state_header(tmp_path / "toy-state.safetensors").trees["scaler"]
    # the file is written at save_precision whatever the training dtype
    assert {v.dtype for v in load_file(str(tmp_path / "toy.safetensors")).values()} == {
        torch.float32
    }


def test_plain_adamw_with_fp16_weights_is_warned_about():
    # torch AdamW divides by sqrt(v) + eps in the weights' dtype: eps 1e-8 is 0 in fp16.
    assert torch.tensor(1e-8, dtype=torch.float16).item() == 0.0
    weight = torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
    weight.grad = torch.tensor([1e-5, 0.0], dtype=torch.float16)
    torch.optim.AdamW([weight], lr=1e-3).step()
    assert not torch.isfinite(weight).all()
    warned = parse_payload(tiny_payload(mixed_precision="fp16", full_fp16=True)).warnings
    assert "full_fp16" in {w.field for w in warned}
    quiet = parse_payload(
        tiny_payload(mixed_precision="fp16", full_fp16=True, optimizer="AdamW8bit")
    ).warnings
    assert "full_fp16" not in {w.field for w in quiet}
