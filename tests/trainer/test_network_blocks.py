"""Per-block ranks and learning rates on SDXL, against sd-scripts' parsing written out here.

The reference is sd-scripts ``networks/lora.py`` at the GUI's commit ``b8896aad``:
``get_block_index`` (SDXL branch), ``get_block_lr_weight`` (presets, padding with 1.0,
the zero threshold), ``get_block_dims_and_alphas`` / ``remove_block_dims_and_alphas``
(23 blocks, a block at LR 0 loses its modules) and ``prepare_optimizer_params`` (one
group per block at ``unet_lr × weight``).
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import PayloadError, parse_payload
from trainer.hooks import StepCompleted
from trainer.lora.blocks import lr_weights
from trainer.lora.build import build_network
from trainer.lora.groups import parameter_groups
from trainer.models.tiny import build_tiny_components
from trainer.run import TrainingJob, train

BLOCK_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold")


def sd_scripts_block(kohya_name: str) -> int:
    """``get_block_index(lora_name, is_sdxl=True)``, restated."""
    name = kohya_name.removeprefix("lora_unet_")
    parts = name.split("_")
    if name.startswith("input_blocks_"):
        return 1 + int(parts[2])
    if name.startswith("middle_block_"):
        return 10 + int(parts[2])
    if name.startswith("output_blocks_"):
        return 13 + int(parts[2])
    return 0 if name.startswith(("time_embed_", "label_emb_")) else 22


def settings(**given: str) -> dict[str, str]:
    return {key: given.get(key, "") for key in BLOCK_KEYS}


def config(**overrides):
    return parse_payload(tiny_payload(**overrides)).config


def unet_network(cfg):
    unet = build_tiny_components()["unet"]
    return build_network(cfg, unet, None)


@shows_effect("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold")
def test_lr_weights_read_presets_lists_padding_and_threshold_as_sd_scripts():
    cosine = [math.sin(math.pi * (i / 8) / 2) for i in reversed(range(9))]
    assert lr_weights(settings(down_lr_weight="cosine"), []) == pytest.approx(
        [1.0, *cosine, 1.0, 1.0, 1.0, *[1.0] * 9, 1.0]
    )
    linear_up = [i / 8 + 0.5 for i in range(9)]  # "linear+0.5": each plus the base
    notes: list[tuple[str, str]] = []
    got = lr_weights(settings(mid_lr_weight="0.5", up_lr_weight="linear+0.5"), notes)
    assert got == pytest.approx([1.0, *[1.0] * 9, 0.5, 1.0, 1.0, *linear_up, 1.0])
    assert [key for key, _ in notes] == ["mid_lr_weight"]  # padded with 1.0, with a note
    # an empty item is 0.0; the threshold zeroes weights at or below it, in the given lists only
    got = lr_weights(settings(down_lr_weight="1,,0.2,2", block_lr_zero_threshold="0.2"), [])
    assert got[1:10] == [1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert got[10:] == [1.0] * 13
    assert lr_weights(settings(), []) is None


def test_a_single_number_or_a_mid_preset_is_a_problem_where_sd_scripts_ignores_or_crashes():
    with pytest.raises(PayloadError) as single:
        parse_payload(tiny_payload(down_lr_weight="0.5"))
    assert "down_lr_weight" in str(single.value)
    with pytest.raises(PayloadError) as mid:
        parse_payload(tiny_payload(mid_lr_weight="cosine"))
    assert "mid_lr_weight" in str(mid.value)
    with pytest.raises(PayloadError) as short:
        parse_payload(tiny_payload(block_dims="4,4,4"))
    assert "23 values" in str(short.value)
    with pytest.raises(PayloadError) as fa:
        parse_payload(tiny_payload(LoRA_type="LoRA-FA", up_lr_weight="cosine"))
    assert "LoRA-FA" in str(fa.value)


DIMS = [0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 0]
ALPHAS = [i / 2 for i in range(23)]
CONV_DIMS = [2] * 5 + [0] + [2] * 17  # block 5 off for the 3×3 convs too


@shows_effect("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
def test_each_block_gets_its_rank_and_alpha_and_conv_block_dims_add_the_resnets():
    cfg = config(
        block_dims=",".join(map(str, DIMS)), block_alphas=",".join(map(str, ALPHAS)),
        conv_block_dims=",".join(map(str, CONV_DIMS)), conv_block_alphas="3," * 22 + "3",
    )  # fmt: skip
    network = unet_network(cfg)
    three_by_three = 0
    for module in network.modules:
        block = sd_scripts_block(module.kohya_name)
        is_3x3 = module.down.dim() == 4 and module.down.shape[-1] == 3
        three_by_three += is_3x3
        expected = (
            (CONV_DIMS[block], 3.0) if is_3x3 else (DIMS[block], ALPHAS[block] or DIMS[block])
        )
        assert (module.rank, module.alpha) == expected, module.kohya_name
    names = {m.kohya_name for m in network.modules}
    assert three_by_three and any("emb_layers_1" in n for n in names)  # resnets are in
    # block 5 (input_blocks_4) has rank 0: neither its transformer nor its resnet
    assert not any(n.startswith("lora_unet_input_blocks_4_") for n in names)
    assert any(n.startswith("lora_unet_input_blocks_5_1_") for n in names)


def test_without_conv_block_dims_standard_keeps_to_the_transformers():
    network = unet_network(config(block_dims=",".join(map(str, DIMS))))
    assert all(m.down.dim() == 2 for m in network.modules)
    assert not any("emb_layers" in m.kohya_name for m in network.modules)


def test_lr_weights_make_one_group_per_block_and_drop_zero_blocks():
    cfg = config(
        LoRA_type="Kohya LoCon", conv_dim=2, unet_lr=1e-3, text_encoder_lr=0,
        down_lr_weight="1,1,1,1,0.5,1,1,0,1", mid_lr_weight="1,0.25", up_lr_weight="cosine",
    )  # fmt: skip
    network = unet_network(cfg)
    groups, names = parameter_groups(cfg, network)
    weights = lr_weights(
        settings(down_lr_weight=cfg.down_lr_weight, mid_lr_weight=cfg.mid_lr_weight,
                 up_lr_weight=cfg.up_lr_weight), [],
    )  # fmt: skip
    assert weights is not None
    blocks = sorted({sd_scripts_block(m.kohya_name) for m in network.modules})
    assert names == [f"unet_block{b}" for b in blocks]  # input, middle, output order
    assert 8 not in blocks  # input_blocks_7 at weight 0: no module, no group
    for name, group in zip(names, groups, strict=True):
        block = int(name.removeprefix("unet_block"))
        assert group["lr"] == pytest.approx(1e-3 * weights[block])
    by_block = {int(n.removeprefix("unet_block")): g for n, g in zip(names, groups, strict=True)}
    assert by_block[11]["lr"] == pytest.approx(2.5e-4) and by_block[5]["lr"] == pytest.approx(5e-4)
    in_groups = sum(len(g["params"]) for g in groups)
    assert in_groups == 2 * len(network.modules)


@pytest.mark.slow
def test_a_per_block_locon_run_trains_its_block_ranks_at_block_rates(
    tiny_model, toy_dataset, tmp_path
):
    payload = tiny_payload(
        LoRA_type="Kohya LoCon", network_dim=4, conv_dim=2, conv_alpha=1, unet_lr=1e-3,
        text_encoder_lr=0, max_train_steps=2, save_every_n_epochs=0,
        block_dims=",".join(map(str, DIMS)), mid_lr_weight="1,0.25,1",
    )  # fmt: skip
    job = TrainingJob(parse_payload(payload).config, tiny_model, toy_dataset, tmp_path)
    events: list = []
    result = train(job, reporter=events.append)
    state = load_file(str(result.lora_path))
    downs = {k.split(".")[0]: v for k, v in state.items() if k.endswith("lora_down.weight")}
    for name, down in downs.items():
        is_3x3 = down.dim() == 4 and down.shape[-1] == 3
        assert down.shape[0] == (2 if is_3x3 else DIMS[sd_scripts_block(name)]), name
    steps = [e for e in events if isinstance(e, StepCompleted)]
    assert steps[-1].lr["unet_block11"] == pytest.approx(steps[-1].lr["unet_block10"] * 0.25)
    ups = [v for k, v in state.items() if k.endswith("lora_up.weight")]
    assert all(torch.isfinite(u).all() for u in ups) and any(u.abs().sum() > 0 for u in ups)
