"""Kohya LoCon: LoRA also on the UNet's resnets, downsamplers and upsamplers, as sd-scripts."""

from __future__ import annotations

import json
import re

import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file

from tests.factories import tiny_payload
from tests.trainer.diffusers_load import unet_output_before_and_after
from tests.trainer.effects import shows_effect
from tests.trainer.test_lora_file import expected_modules
from trainer.config import parse_payload
from trainer.lora.kohya_file import read_metadata
from trainer.lora.network import apply_lora
from trainer.lora.regularizers import Dropouts, apply_max_norm, drop_down_output
from trainer.lora.targets import ConvRank
from trainer.models.tiny import build_tiny_components
from trainer.run import TrainingJob, TrainingResult, train

pytestmark = pytest.mark.slow

# The layers inside ResnetBlock2D / Downsample2D / Upsample2D, in the checkpoint's own
# ldm names: in_layers.2 / out_layers.3 (3x3), emb_layers.1 (Linear), skip_connection
# (1x1), the downsampler's op and the upsampler's conv (3x3).
CONV_LDM = re.compile(
    r"model\.diffusion_model\.((?:(?:input|output)_blocks\.\d+\.0|middle_block\.[02])\."
    r"(?:in_layers\.2|out_layers\.3|emb_layers\.1|skip_connection)"
    r"|input_blocks\.\d+\.0\.op|output_blocks\.\d+\.\d+\.conv)\.weight"
)
RANK, ALPHA, CONV_RANK, CONV_ALPHA = 4, 2.0, 8, 4.0


def checkpoint_shapes(checkpoint) -> dict[str, tuple[int, ...]]:
    """Kohya module name -> base weight shape, for every LoCon layer of the checkpoint."""
    with safe_open(str(checkpoint), "pt") as handle:
        return {
            "lora_unet_" + m.group(1).replace(".", "_"): tuple(handle.get_slice(key).get_shape())
            for key in handle.keys()  # noqa: SIM118 - safe_open is no dict
            if (m := CONV_LDM.fullmatch(key))
        }


@pytest.fixture(scope="module")
def locon_run(tiny_model, toy_dataset, tmp_path_factory) -> tuple[TrainingJob, TrainingResult]:
    payload = tiny_payload(
        LoRA_type="Kohya LoCon", conv_dim=CONV_RANK, conv_alpha=CONV_ALPHA, network_dim=RANK,
        network_alpha=ALPHA, text_encoder_lr=0, unet_lr=1e-3, max_train_steps=3,
        save_every_n_epochs=0,
    )  # fmt: skip
    job = TrainingJob(
        parse_payload(payload).config, tiny_model, toy_dataset, tmp_path_factory.mktemp("locon")
    )
    return job, train(job)


@shows_effect("LoRA_type", "conv_dim", "conv_alpha")
def test_locon_file_adds_every_resnet_and_sampler_layer_with_kohya_shapes(locon_run):
    job, result = locon_run
    state = load_file(str(result.lora_path))
    modules = {key.split(".")[0] for key in state}
    conv = checkpoint_shapes(job.base_model)
    standard = {m for m in expected_modules(job.base_model) if m.startswith("lora_unet_")}
    assert any("_op" in m for m in conv) and any(m.endswith("_2_conv") for m in conv)
    assert modules == standard | conv.keys()
    for name, shape in conv.items():
        down, up = state[f"{name}.lora_down.weight"], state[f"{name}.lora_up.weight"]
        three = len(shape) == 4 and shape[2:] == (3, 3)
        rank = CONV_RANK if three else RANK
        if len(shape) == 2:  # emb_layers.1 is a Linear: network_dim
            assert (down.shape, up.shape) == ((rank, shape[1]), (shape[0], rank)), name
        else:  # down keeps the kernel, up is 1x1 (sd-scripts' conv LoRA)
            assert down.shape == (rank, shape[1], *shape[2:]), name
            assert up.shape == (shape[0], rank, 1, 1), name
        assert float(state[f"{name}.alpha"]) == (CONV_ALPHA if three else ALPHA), name
    assert sum(state[f"{n}.lora_up.weight"].abs().sum() > 0 for n in conv) == len(conv)


def test_locon_metadata_records_the_network_args_as_sd_scripts(locon_run):
    meta = read_metadata(locon_run[1].lora_path)
    assert meta["ss_network_module"] == "networks.lora"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "8", "conv_alpha": "4"}
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"


def test_diffusers_loads_every_locon_key_with_its_rank_and_alpha(locon_run):
    job, result = locon_run
    pipe, before, after = unet_output_before_and_after(job.base_model, result.lora_path)
    layers = {name: m for name, m in pipe.unet.named_modules() if isinstance(m, LoraLayer)}
    assert len(layers) == len({key.split(".")[0] for key in load_file(str(result.lora_path))})
    conv1 = layers["down_blocks.0.resnets.0.conv1"]
    (adapter,) = conv1.r
    assert conv1.r[adapter] == CONV_RANK and conv1.scaling[adapter] == CONV_ALPHA / CONV_RANK
    assert layers["down_blocks.1.resnets.0.conv_shortcut"].r[adapter] == RANK
    assert (after - before).abs().max() > 1e-4


def test_conv_dim_0_keeps_only_the_linear_and_1x1_layers_of_the_resnets():
    unet = build_tiny_components()["unet"]
    names = {m.kohya_name for m in apply_lora(unet, None, RANK, ALPHA, conv=ConvRank(0, 1)).modules}
    assert "lora_unet_input_blocks_1_0_emb_layers_1" in names
    assert "lora_unet_input_blocks_4_0_skip_connection" in names
    assert not any(re.search(r"in_layers|out_layers|_op$|_conv$", n) for n in names)


def test_rank_dropout_masks_whole_conv_channels():
    torch.manual_seed(0)
    down = torch.ones(3, 8, 5, 5)
    dropped = drop_down_output(down, Dropouts(rank=0.5))
    per_channel = dropped.flatten(2)
    assert torch.equal(per_channel.amin(2), per_channel.amax(2))  # one decision per (sample, rank)
    assert set(per_channel.unique().tolist()) == {0.0, 2.0}


def test_max_norm_composes_conv_modules_as_sd_scripts():
    unet = build_tiny_components()["unet"]
    network = apply_lora(unet, None, RANK, ALPHA, conv=ConvRank(CONV_RANK, CONV_ALPHA))
    (module,) = [
        m for m in network.modules if m.kohya_name.endswith("input_blocks_1_0_in_layers_2")
    ]
    torch.manual_seed(1)
    with torch.no_grad():
        module.up.normal_()
    up, down = module.up.detach().clone(), module.down.detach().clone()
    composed = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    norm = float((composed * CONV_ALPHA / CONV_RANK).norm())
    report = apply_max_norm(network, norm / 2)
    assert report.keys_scaled >= 1
    assert torch.allclose(module.up, up * 0.5**0.5) and torch.allclose(module.down, down * 0.5**0.5)
