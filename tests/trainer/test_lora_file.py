"""The saved LoRA is what A1111, ComfyUI and diffusers expect of sd-scripts output."""

from __future__ import annotations

import re

import torch
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file

from tests.trainer.diffusers_load import unet_output_before_and_after
from tests.trainer.effects import shows_effect
from trainer.lora.kohya_file import read_metadata

# Kohya's targets, written against the checkpoint's own ldm names: Linear layers
# of the transformer blocks, and CLIP attention / MLP projections.
UNET_LDM = re.compile(
    r"model\.diffusion_model\.((?:input_blocks|output_blocks)\.\d+\.1|middle_block\.1)\."
    r"(proj_in|proj_out|transformer_blocks\.\d+\.(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0)"
    r"|ff\.net\.(?:0\.proj|2)))\.weight"
)
TE1_LDM = re.compile(
    r"conditioner\.embedders\.0\.transformer\.(text_model\.encoder\.layers\.\d+\."
    r"(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12]))\.weight"
)
TE2_LDM = re.compile(
    r"conditioner\.embedders\.1\.model\.transformer\.resblocks\.(\d+)\.(attn\.in_proj_weight"
    r"|attn\.out_proj\.weight|mlp\.c_fc\.weight|mlp\.c_proj\.weight)"
)
TE2_PARTS = {
    "attn.out_proj.weight": ["self_attn_out_proj"],
    "mlp.c_fc.weight": ["mlp_fc1"],
    "mlp.c_proj.weight": ["mlp_fc2"],
    "attn.in_proj_weight": ["self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj"],
}


def expected_modules(checkpoint) -> set[str]:
    with safe_open(str(checkpoint), "pt") as handle:
        keys = list(handle.keys())
    names = set()
    for key in keys:
        if m := UNET_LDM.fullmatch(key):
            names.add("lora_unet_" + f"{m.group(1)}.{m.group(2)}".replace(".", "_"))
        elif m := TE1_LDM.fullmatch(key):
            names.add("lora_te1_" + m.group(1).replace(".", "_"))
        elif m := TE2_LDM.fullmatch(key):
            for part in TE2_PARTS[m.group(2)]:
                names.add(f"lora_te2_text_model_encoder_layers_{m.group(1)}_{part}")
    return names


def test_lora_keys_match_the_names_derived_from_the_base_checkpoint(trained_run):
    state = load_file(str(trained_run.result.lora_path))
    modules = {key.split(".")[0] for key in state}
    assert modules == expected_modules(trained_run.job.base_model)
    for name in modules:
        assert {
            f"{name}.lora_down.weight",
            f"{name}.lora_up.weight",
            f"{name}.alpha",
        } <= state.keys()


@shows_effect("network_alpha", "network_dim")
def test_lora_tensors_are_saved_in_save_precision_with_the_payload_alpha(trained_run):
    state = load_file(str(trained_run.result.lora_path))
    assert {tensor.dtype for tensor in state.values()} == {torch.float16}
    alphas = {float(t) for k, t in state.items() if k.endswith(".alpha")}
    assert alphas == {2.0}
    down = state["lora_unet_input_blocks_4_1_proj_in.lora_down.weight"]
    assert down.shape[0] == 4  # network_dim


def test_trained_lora_up_weights_are_not_zero(trained_run):
    state = load_file(str(trained_run.result.lora_path))
    zero = {
        key.split(".")[0]
        for key, tensor in state.items()
        if key.endswith("lora_up.weight") and not bool(tensor.abs().sum() > 0)
    }
    # SDXL conditions on CLIP-L's penultimate layer, so its last layer never gets
    # a gradient (sd-scripts creates and saves those modules untrained too).
    last_te1_layer = {
        k.split(".")[0] for k in state if k.startswith("lora_te1_text_model_encoder_layers_2_")
    }
    assert zero == last_te1_layer


def test_diffusers_loads_every_key_and_the_unet_output_changes(trained_run):
    base = trained_run.job.base_model
    pipe, before, after = unet_output_before_and_after(base, trained_run.result.lora_path)
    loaded = sum(
        isinstance(m, LoraLayer)
        for part in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
        for m in part.modules()
    )
    state = load_file(str(trained_run.result.lora_path))
    assert loaded == len({key.split(".")[0] for key in state})
    assert (after - before).abs().max() > 1e-4


def test_metadata_round_trips_kohya_fields(trained_run):
    meta = read_metadata(trained_run.result.lora_path)
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "4"
    assert meta["ss_network_alpha"] == "2"  # the payload's 2, as sd-scripts writes it
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["ss_output_name"] == "toy"
    assert meta["ss_steps"] == str(trained_run.result.steps)
    assert meta["ss_num_train_images"] == "10"  # 2x4 + 1x2
    assert meta["ss_sd_model_name"] == trained_run.job.base_model.name
    assert len(meta["sshs_model_hash"]) == 64
    assert meta["ss_dataset_dirs"] == (
        '{"1_extra": {"n_repeats": 1, "img_count": 2}, "2_toy": {"n_repeats": 2, "img_count": 4}}'
    )


def test_metadata_holds_no_absolute_paths_or_secrets(trained_run):
    meta = read_metadata(trained_run.result.lora_path)
    blob = " ".join(meta.values())
    assert str(trained_run.job.base_model.parent) not in blob
    assert str(trained_run.job.data_dir) not in blob
    assert "wandb" not in " ".join(meta)


@shows_effect("output_name", "save_every_n_epochs")
def test_epoch_checkpoints_use_kohya_names(trained_run):
    out = trained_run.job.output_dir
    # 10 images x repeats / batch 2 = 5 batches, 2 epochs, a checkpoint every epoch but the last.
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "toy-000001.safetensors",
        "toy.safetensors",
    ]
    assert not list(out.glob(".*tmp"))
