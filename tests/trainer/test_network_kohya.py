"""Kohya's own variants: LoRA-FA, Kohya DyLoRA and ``dim_from_weights``.

Each trained file is read back with sd-scripts' loading rules written out below
(``networks/lora.py: LoRAInfModule.merge_to``, which both types' files follow: a
DyLoRA file is a plain LoRA, ``networks/dylora.py: DyLoRAModule.state_dict``) and must
give the output of lorabox's own network holding the same file.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from tests.trainer.network_helpers import assert_same, kohya_layers, outputs
from trainer.config import PayloadError, parse_payload
from trainer.lora.build import build_network
from trainer.lora.dylora import DyLoraModule, DyLoraNetwork
from trainer.lora.groups import parameter_groups
from trainer.lora.kohya_file import read_metadata
from trainer.models.tiny import build_tiny_components
from trainer.run import TrainingJob, train

RANK, ALPHA, UNIT = 4, 2.0, 2


def config(**overrides):
    return parse_payload(tiny_payload(**overrides)).config


@torch.no_grad()
def merge_like_sd_scripts(
    parts: dict[str, torch.nn.Module], state: dict[str, torch.Tensor]
) -> None:
    """``LoRAInfModule.merge_to`` with multiplier 1: W += ΔW · alpha / dim, dim = the rows of
    lora_down (alpha = dim when absent, ``create_network_from_weights``); a 3×3 conv's ΔW is
    ``conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)``."""
    layers = kohya_layers(parts)
    for key in [k for k in state if k.endswith(".lora_down.weight")]:
        name = key.split(".")[0]
        down, up = state[key].float(), state[f"{name}.lora_up.weight"].float()
        dim = down.shape[0]
        scale = float(state.get(f"{name}.alpha", torch.tensor(dim))) / dim
        if down.dim() == 2:
            delta = up @ down
        elif down.shape[2:4] == (1, 1):
            delta = (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2))[:, :, None, None]
        else:
            delta = F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
        layers[name].weight += delta * scale


def our_network_outputs(cfg, weights) -> list[torch.Tensor]:
    parts = build_tiny_components()
    build_network(cfg, parts["unet"], (parts["text_encoder"], parts["text_encoder_2"]), weights)
    return outputs(parts)


def reference_outputs(state) -> list[torch.Tensor]:
    parts = build_tiny_components()
    merge_like_sd_scripts(parts, state)
    return outputs(parts)


def run(tiny_model, toy_dataset, out, **overrides):
    payload = tiny_payload(
        network_dim=RANK, network_alpha=ALPHA, unet_lr=1e-3, text_encoder_lr=1e-3,
        max_train_steps=3, save_every_n_epochs=0, save_precision="float", **overrides,
    )  # fmt: skip
    job = TrainingJob(parse_payload(payload).config, tiny_model, toy_dataset, out)
    return job, train(job)


@pytest.fixture(scope="module")
def fa_run(tiny_model, toy_dataset, tmp_path_factory):
    return run(tiny_model, toy_dataset, tmp_path_factory.mktemp("fa"), LoRA_type="LoRA-FA")


@pytest.fixture(scope="module")
def dylora_run(tiny_model, toy_dataset, tmp_path_factory):
    return run(
        tiny_model, toy_dataset, tmp_path_factory.mktemp("dylora"),
        LoRA_type="Kohya DyLoRA", unit=UNIT, conv_dim=RANK, conv_alpha=1,
    )  # fmt: skip


@pytest.mark.slow
def test_lora_fa_file_reloads_by_sd_scripts_rules_as_our_network(fa_run):
    job, result = fa_run
    state = load_file(str(result.lora_path))
    assert {key.rsplit(".", 2)[-2] for key in state if key.endswith("weight")} == {
        "lora_down", "lora_up",
    }  # fmt: skip
    assert any(v.abs().sum() > 0 for k, v in state.items() if k.endswith("lora_up.weight"))
    assert_same(our_network_outputs(job.config, result.lora_path), reference_outputs(state))
    meta = read_metadata(result.lora_path)
    assert meta["ss_network_module"] == "networks.lora_fa"
    assert "ss_network_args" not in meta  # the GUI passes no network_args for plain LoRA-FA


def test_lora_fa_trains_only_lora_up_from_a_normal_lora_down():
    cfg = config(LoRA_type="LoRA-FA", network_dim=RANK)
    parts = build_tiny_components()
    network = build_network(cfg, parts["unet"], (parts["text_encoder"], parts["text_encoder_2"]))
    groups, _ = parameter_groups(cfg, network)
    listed = {id(p) for g in groups for p in g["params"]}
    assert listed == {id(m.up) for m in network.modules}
    assert not any(m.down.requires_grad for m in network.modules)
    # networks/lora_fa.py: normal_(lora_down, std=sqrt(2 / (in_dim + r)))
    pooled = torch.cat([
        (m.down / math.sqrt(2.0 / (m.down.shape[1] + m.rank))).flatten() for m in network.modules
    ])  # fmt: skip
    assert pooled.mean().abs() < 0.05 and abs(float(pooled.std()) - 1.0) < 0.05


@pytest.mark.slow
def test_dylora_file_is_a_plain_lora_that_loads_whole_and_cut_at_each_unit(dylora_run):
    job, result = dylora_run
    state = load_file(str(result.lora_path))
    downs = {k: v for k, v in state.items() if k.endswith("lora_down.weight")}
    assert {v.shape[0] for v in downs.values()} == {RANK}
    assert any(v.dim() == 4 and v.shape[-1] == 3 for v in downs.values())  # conv_dim adds 3×3
    assert_same(our_network_outputs(job.config, result.lora_path), reference_outputs(state))
    for rank in range(UNIT, RANK, UNIT):  # extract_lora_from_dylora.py: split_lora_model
        cut = {
            k: v[:rank] if "lora_down" in k else v[:, :rank] if "lora_up" in k else v
            for k, v in state.items()
        }
        assert all(torch.isfinite(o).all() for o in reference_outputs(cut))
    meta = read_metadata(result.lora_path)
    assert meta["ss_network_module"] == "networks.dylora"
    assert json.loads(meta["ss_network_args"]) == {
        "conv_dim": "4", "conv_alpha": "1", "unit": "2", "dropout": None,
    }  # fmt: skip


@shows_effect("unit")
def test_dylora_trains_one_unit_of_rows_per_step_at_sd_scripts_scale():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    module = DyLoraModule("lora_unet_x", base, rank=RANK, alpha=ALPHA, unit=UNIT)
    with torch.no_grad():
        for column in module.lora_B:
            column.normal_()
    x = torch.randn(3, 6)
    down = torch.cat(tuple(module.lora_A)).detach()
    up = torch.cat(tuple(module.lora_B), 1).detach()
    random.seed(3)
    module.draw(training=True)
    first = module.first
    assert first % UNIT == 0
    plain = (x @ base.weight.T + base.bias).detach()
    out = base(x)
    # DyLoRAModule.forward: all r rows, scaled by alpha / r · sqrt(r / (b + unit))
    update = (x @ down.T @ up.T) * (ALPHA / RANK) * math.sqrt(RANK / (first + UNIT))
    assert torch.allclose(out - plain, update, atol=1e-6)
    out.sum().backward()
    trained = [i for i, row in enumerate(module.lora_A) if row.grad is not None]
    assert trained == list(range(first, first + UNIT))
    assert [i for i, c in enumerate(module.lora_B) if c.grad is not None] == trained
    module.draw(training=False)  # sampling: the whole rank at the file's scale alpha / r
    assert torch.allclose(base(x) - plain, x @ down.T @ up.T * (ALPHA / RANK), atol=1e-6)


@shows_effect("dim_from_weights")
def test_dim_from_weights_takes_every_module_rank_and_alpha_from_the_file(tmp_path):
    source = config(block_dims="0," + "3," * 4 + "5," * 17 + "0", block_alphas="1," * 22 + "1")
    parts = build_tiny_components()
    network = build_network(source, parts["unet"], (parts["text_encoder"], parts["text_encoder_2"]))
    path = tmp_path / "source.safetensors"
    save_file(network.file_tensors(torch.float32), str(path))
    expected = {m.kohya_name: (m.rank, m.alpha) for m in network.modules}
    for kind in ("Standard", "Kohya LoCon", "LoRA-FA"):
        cfg = config(
            LoRA_type=kind, network_dim=8, dim_from_weights=True, network_weights=str(path)
        )
        parts = build_tiny_components()
        built = build_network(
            cfg, parts["unet"], (parts["text_encoder"], parts["text_encoder_2"]), path
        )
        assert {m.kohya_name: (m.rank, m.alpha) for m in built.modules} == expected, kind
    cfg = config(
        LoRA_type="Kohya DyLoRA", conv_dim=0, dim_from_weights=True, network_weights=str(path)
    )
    parts = build_tiny_components()
    dylora = build_network(
        cfg, parts["unet"], (parts["text_encoder"], parts["text_encoder_2"]), path
    )
    assert isinstance(dylora, DyLoraNetwork)
    assert {m.kohya_name: (m.rank, m.unit) for m in dylora.dylora_modules()} == {
        n: (r, 1) for n, (r, _) in expected.items()
    }  # create_network_from_weights builds DyLoRA modules with unit 1
    with pytest.raises(PayloadError):
        parse_payload(tiny_payload(dim_from_weights=True))


def test_kohya_dylora_refuses_what_sd_scripts_asserts_and_warns_what_it_ignores():
    with pytest.raises(PayloadError) as bad:
        parse_payload(tiny_payload(LoRA_type="Kohya DyLoRA", network_dim=6, unit=4, conv_dim=3))
    assert {p.field for p in bad.value.problems} == {"unit", "conv_dim"}
    parsed = parse_payload(
        tiny_payload(LoRA_type="Kohya DyLoRA", conv_dim=0, rank_dropout=0.1, scale_weight_norms=1)
    )
    warned = {w.field for w in parsed.warnings}
    assert {"rank_dropout", "scale_weight_norms"} <= warned
    assert parsed.config.scale_weight_norms is None  # sd-scripts turns it off for DyLoRA
