"""Full-size SDXL, built on the meta device: no GPU, no download, no memory."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from trainer.lora.network import apply_lora
from trainer.models.configs import SDXL_BASE_CONFIG, read_component_config


def full_size_network(rank: int):
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(read_component_config(SDXL_BASE_CONFIG, "unet"))
        te1 = CLIPTextModel(
            CLIPTextConfig(**read_component_config(SDXL_BASE_CONFIG, "text_encoder"))
        )
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**read_component_config(SDXL_BASE_CONFIG, "text_encoder_2"))
        )
        return apply_lora(unet, (te1, te2), rank, rank / 2)


def test_full_sdxl_gets_722_unet_and_264_text_encoder_modules_and_114m_parameters_at_rank_32():
    network = full_size_network(32)
    unet = [m for m in network.modules if m.part == "unet"]
    text = [m for m in network.modules if m.part == "textencoder"]
    assert (len(unet), len(text)) == (722, 264)
    assert network.parameter_count() == 114_016_256
    names = {m.kohya_name for m in network.modules}
    # Literal keys of an sd-scripts SDXL LoRA (networks/lora.py: LoRANetwork.__init__ names).
    for name in (
        "lora_unet_input_blocks_4_1_proj_in",
        "lora_unet_input_blocks_7_1_transformer_blocks_3_attn2_to_k",
        "lora_unet_middle_block_1_transformer_blocks_9_ff_net_0_proj",
        "lora_unet_output_blocks_1_1_transformer_blocks_0_attn1_to_out_0",
        "lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_2",
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te1_text_model_encoder_layers_11_mlp_fc1",
        "lora_te2_text_model_encoder_layers_31_mlp_fc2",
    ):
        assert name in names
    shapes = {m.kohya_name: (tuple(m.down.shape), tuple(m.up.shape)) for m in network.modules}
    assert shapes["lora_unet_input_blocks_7_1_transformer_blocks_3_attn2_to_k"][0] == (32, 2048)
    assert shapes["lora_unet_middle_block_1_transformer_blocks_9_ff_net_0_proj"][1] == (10240, 32)
    assert shapes["lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_2"][0] == (32, 2560)
    assert shapes["lora_te2_text_model_encoder_layers_31_mlp_fc2"][0] == (32, 5120)
