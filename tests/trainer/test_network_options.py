"""The LyCORIS settings reach lycoris-lora as kohya_ss passes them, and every GUI type is honoured.

The expected ``network_args`` are copied from kohya_ss v24.1.7 ``kohya_gui/lora_gui.py:
train_model``; what each setting does is read off the library's own modules
(``lycoris/modules/*.py``), built on the miniature SDXL without training.
"""

from __future__ import annotations

import pytest
import torch

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from tests.trainer.network_helpers import assert_same, outputs
from trainer.config import KEYS, PayloadError, parse_payload
from trainer.lora.build import build_network
from trainer.lora.gui_args import gui_items, net_kwargs, network_module
from trainer.lora.metadata import network_args
from trainer.models.tiny import build_tiny_components

BASE = {"network_dim": 4, "network_alpha": 2, "conv_dim": 4, "conv_alpha": 2}


def config(kind: str, **overrides):
    # lycoris' butterfly blocks need a rank of at least 10 on SDXL's widths (config rules)
    boft = {"network_dim": 10, "conv_dim": 10} if kind == "LyCORIS/BOFT" else {}
    return parse_payload(tiny_payload(LoRA_type=kind, **{**BASE, **boft, **overrides})).config


def built(kind: str, parts=None, **overrides):
    parts = parts or build_tiny_components()
    cfg = config(kind, **overrides)
    return build_network(cfg, parts["unet"], (parts["text_encoder"], parts["text_encoder_2"]))


def file_keys(network) -> set[str]:
    return set(network.file_tensors(torch.float32))


def modules(network) -> list[torch.nn.Module]:
    return [m for ms in network.parts.values() for m in ms]


def test_network_args_are_the_guis_for_each_type():
    # lora_gui.py: train_model, LyCORIS/LoHa (values as its f-string writes them)
    loha = config("LyCORIS/LoHa")
    assert gui_items(loha) == [
        ("preset", "full"), ("conv_dim", "4"), ("conv_alpha", "2"), ("rank_dropout", "0"),
        ("bypass_mode", "False"), ("dora_wd", "False"), ("module_dropout", "0"),
        ("use_tucker", "False"), ("use_scalar", "False"), ("rank_dropout_scale", "False"),
        ("algo", "loha"), ("train_norm", "False"),
    ]  # fmt: skip
    assert net_kwargs(loha)["dropout"] is None  # train_network.py's LyCORIS workaround
    assert gui_items(config("LyCORIS/iA3")) == [
        ("preset", "full"), ("conv_dim", "4"), ("conv_alpha", "2"), ("train_on_input", "True"),
        ("algo", "ia3"),
    ]  # fmt: skip
    assert dict(gui_items(config("LyCORIS/DyLoRA", unit=2)))["block_size"] == "2"
    assert dict(gui_items(config("LyCORIS/LoKr")))["use_cp"] == "False"
    assert "conv_dim" not in dict(gui_items(config("LyCORIS/Native Fine-Tuning")))
    assert gui_items(config("LoCon")) == gui_items(config("LyCORIS/LoCon"))  # the legacy name
    # the Kohya types pass only what is set; LoRA-FA never gets conv_dim (the GUI's own branch)
    assert gui_items(config("LoRA-FA", rank_dropout=0.1)) == [("rank_dropout", "0.1")]
    assert network_args(config("LoRA-FA")) == {}


def test_lora_type_is_honoured_for_every_gui_value():
    spec = KEYS["LoRA_type"]
    assert spec.supported is None and spec.refusal("LyCORIS/BOFT") is None
    modules_by_type = {}
    for kind in spec.choices:
        extra = {"conv_dim": 4, "unit": 2} if "DyLoRA" in kind else {}
        cfg = config(kind, **extra)
        modules_by_type[kind] = network_module(cfg.lora_type)
        assert build_network(cfg, build_tiny_components()["unet"], None).parameter_count() > 0
    assert modules_by_type["Kohya DyLoRA"] == "networks.dylora"
    assert modules_by_type["LoRA-FA"] == "networks.lora_fa"
    assert {modules_by_type[k] for k in spec.choices if "LyCORIS" in k or k == "LoCon"} == {
        "lycoris.kohya"
    }


@shows_effect("LyCORIS_preset")
def test_presets_choose_the_layers_as_on_sd_scripts_unet():
    full = {k.split(".")[0] for k in file_keys(built("LyCORIS/LoCon"))}
    attn = {k.split(".")[0] for k in file_keys(built("LyCORIS/LoCon", LyCORIS_preset="attn-only"))}
    convs = {
        k.split(".")[0]
        for k in file_keys(built("LyCORIS/LoCon", LyCORIS_preset="unet-convblock-only"))
    }
    lin = {k.split(".")[0] for k in file_keys(built("LyCORIS/LoCon", LyCORIS_preset="full-lin"))}
    assert attn < full and all(re_attn(n) for n in attn)
    assert convs < full and not any("transformer" in n or "lora_te" in n for n in convs)
    assert any(n.endswith("in_layers_2") for n in full) and not any(
        n.endswith(("in_layers_2", "out_layers_3", "_op", "_2_conv")) for n in lin
    )
    with pytest.raises(PayloadError):
        parse_payload(tiny_payload(LoRA_type="LyCORIS/LoCon", LyCORIS_preset="my/preset.toml"))


def re_attn(name: str) -> bool:
    return "_attn1_" in name or "_attn2_" in name or "_self_attn_" in name


@shows_effect("bypass_mode")
def test_bypass_mode_adds_the_modules_output_with_the_same_result():
    rebuild, bypass = build_tiny_components(), build_tiny_components()
    first = built("LyCORIS/LoHa", rebuild)
    second = built("LyCORIS/LoHa", bypass, bypass_mode=True)
    assert all(m.bypass_mode for m in modules(second)) and not any(
        m.bypass_mode for m in modules(first)
    )
    with torch.no_grad():
        for a, b in zip(first.parameters(), second.parameters(), strict=True):
            a.add_(torch.randn_like(a) * 0.05)
            b.copy_(a)
    assert_same(outputs(bypass), outputs(rebuild))


@shows_effect("constrain", "rescaled")
def test_oft_constraint_and_rescale_reach_the_modules():
    for kind in ("LyCORIS/Diag-OFT", "LyCORIS/BOFT"):
        network = built(kind, constrain=0.5, rescaled=True)
        assert all(m.constraint == 0.5 * m.dim for m in modules(network))
        assert any(k.endswith(".rescale") for k in file_keys(network))
        assert not any(k.endswith(".rescale") for k in file_keys(built(kind)))


@shows_effect("dora_wd", "train_norm", "use_tucker", "use_scalar")
def test_locon_options_add_their_tensors():
    plain = file_keys(built("LyCORIS/LoCon"))
    assert not any(k.endswith(("dora_scale", "w_norm", "lora_mid.weight")) for k in plain)
    assert any(k.endswith("dora_scale") for k in file_keys(built("LyCORIS/LoCon", dora_wd=True)))
    assert any(k.endswith("w_norm") for k in file_keys(built("LyCORIS/LoCon", train_norm=True)))
    tucker = file_keys(built("LyCORIS/LoCon", use_tucker=True))
    assert any(k.endswith("lora_mid.weight") for k in tucker)
    scalar = built("LyCORIS/LoCon", use_scalar=True)
    assert all(isinstance(m.scalar, torch.nn.Parameter) for m in modules(scalar))
    assert all(m.lora_up.weight.abs().sum() > 0 for m in modules(scalar))  # not a zero start


@shows_effect("factor", "use_cp")
def test_lokr_factor_and_cp_shape_the_kronecker_factors():
    default = built("LyCORIS/LoKr", network_dim=2)
    two = built("LyCORIS/LoKr", network_dim=2, factor=2)
    w1 = {m.lora_name: m.lokr_w1_a.shape[0] for m in modules(two) if hasattr(m, "lokr_w1_a")}
    w1 |= {m.lora_name: m.lokr_w1.shape[0] for m in modules(two) if hasattr(m, "lokr_w1")}
    assert set(w1.values()) == {2}  # the output side split by 2 (lycoris factorization)
    assert file_keys(default) != file_keys(two)
    assert not any(k.endswith("lokr_t2") for k in file_keys(default))
    assert any(
        k.endswith("lokr_t2") for k in file_keys(built("LyCORIS/LoKr", network_dim=2, use_cp=True))
    )


def test_settings_the_library_does_not_read_train_the_same():
    # decompose_both: lycoris.kohya passes the text "False", which is true in LokrModule.
    on = built("LyCORIS/LoKr", network_dim=2, decompose_both=True)
    off = built("LyCORIS/LoKr", network_dim=2, decompose_both=False)
    assert file_keys(on) == file_keys(off) and any(k.endswith("lokr_w1_a") for k in file_keys(off))
    # rank_dropout_scale and train_on_input never reach the modules (create_network).
    scaled = built("LyCORIS/LoHa", rank_dropout_scale=True, rank_dropout=0.1)
    assert not any(m.rank_dropout_scale for m in modules(scaled))
    for value in (True, False):
        ia3 = built("LyCORIS/iA3", train_on_input=value)
        assert not any(m.train_input for m in modules(ia3))
    for key in ("decompose_both", "rank_dropout_scale", "train_on_input"):
        assert KEYS[key].same_result and not KEYS[key].needs_effect_test()


def test_lycoris_combinations_the_trainer_refuses():
    problems = {
        "fp8_base": dict(
            LoRA_type="LyCORIS/Native Fine-Tuning", fp8_base=True, mixed_precision="bf16"
        ),
        "network_dim": dict(LoRA_type="LyCORIS/DyLoRA", network_dim=6, unit=4, conv_dim=8),
        "conv_dim": dict(LoRA_type="LyCORIS/BOFT", network_dim=16, conv_dim=8),
    }
    for key, payload in problems.items():
        with pytest.raises(PayloadError) as caught:
            parse_payload(tiny_payload(**payload))
        assert key in {p.field for p in caught.value.problems}, key
    warned = parse_payload(tiny_payload(LoRA_type="LyCORIS/LoKr", block_dims="1")).warnings
    assert "block_dims" in {w.field for w in warned}
