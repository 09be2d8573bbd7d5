"""Full-size SDXL: the LoRA network built on the meta device (no GPU, no download, no
memory), and one real training step on an all-zero full-size checkpoint (a sparse file)."""

from __future__ import annotations

import json
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from tests.factories import make_dataset, seed_payload
from tests.trainer.test_lora_file import TE1_LDM, TE2_LDM, TE2_PARTS, UNET_LDM
from trainer.estimate.fake import meta_sdxl
from trainer.lora.network import apply_lora
from trainer.models.configs import SDXL_BASE_CONFIG, read_component_config
from trainer.models.ldm_checkpoint import sdxl_checkpoint

REPO = Path(__file__).resolve().parents[2]


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


# --- one step on a full-size checkpoint ---------------------------------------------------


def write_sparse_sdxl(path: Path) -> int:
    """SDXL base's single file, every tensor zero: the 2,513 keys of the original layout
    (``trainer.models.ldm_checkpoint``) with their shapes, in fp16 as SDXL ships.

    The models are built on the meta device and only the safetensors header is written;
    the 6.9 GB of data are zeros, so the file is sized with ``truncate`` and takes no
    blocks on disk: nothing of it is ever materialised here."""
    model = meta_sdxl(SDXL_BASE_CONFIG)
    state = sdxl_checkpoint(model.unet, model.vae, model.text_encoder, model.text_encoder_2)
    header: dict[str, object] = {"__metadata__": {"lorabox": "all-zero full-size SDXL"}}
    offset = 0
    for key, tensor in state.items():
        end = offset + tensor.numel() * 2  # F16
        header[key] = {"dtype": "F16", "shape": list(tensor.shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)
    return len(state)


def module_shapes(checkpoint: Path) -> dict[str, tuple[int, int]]:
    """Kohya module name -> (out, in) of the layer it adapts, from the checkpoint's own keys
    by the rule ComfyUI and A1111 key a Kohya SDXL LoRA with (see ``test_lora_file``)."""
    shapes: dict[str, tuple[int, int]] = {}
    with safe_open(str(checkpoint), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - a safe_open handle is not a dict
            if m := UNET_LDM.fullmatch(key):
                names = ["lora_unet_" + f"{m.group(1)}.{m.group(2)}".replace(".", "_")]
            elif m := TE1_LDM.fullmatch(key):
                names = ["lora_te1_" + m.group(1).replace(".", "_")]
            elif m := TE2_LDM.fullmatch(key):  # OpenCLIP fuses q, k and v in one in_proj
                prefix = f"lora_te2_text_model_encoder_layers_{m.group(1)}_"
                names = [prefix + part for part in TE2_PARTS[m.group(2)]]
            else:
                continue
            out, into = handle.get_slice(key).get_shape()
            shapes.update((name, (out // len(names), into)) for name in names)
    return shapes


@pytest.fixture
def workdir() -> Iterator[Path]:
    """The checkpoint (6.9 GB apparent), the dataset and the LoRA, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="lorabox-full-size-") as folder:
        yield Path(folder)


NATIVE_BF16 = torch.backends.cpu.get_cpu_capability().startswith(("AVX512", "AMX"))


@pytest.mark.slow
def test_python_m_trainer_trains_one_step_of_the_seed_payload_on_a_full_size_sdxl(workdir):
    checkpoint = workdir / "sdxl-zero.safetensors"
    assert write_sparse_sdxl(checkpoint) == 2513
    data = make_dataset(workdir / "data", {"1_toy": 1}, sizes=[(256, 256)])
    # bf16 where the CPU multiplies bf16 natively (oneDNN on AVX-512 or AMX; on a CPU the
    # trainer turns fp16 into fp32, trainer/run.py: resolve_precision): on an AVX-512 Xeon
    # of this project's CI, 78 s wall, 9.3 s for the step, 18.0 GB peak RSS. On an AVX2-only
    # CPU (an AMD EPYC of another CI run) torch's bf16 matmul is a scalar fallback: one step
    # ran past 15 minutes; fp32 takes the same path through the trainer with MKL's matmuls:
    # 211 s wall, 109 s for the step, 19.8 GB.
    payload = {**seed_payload(), "train_batch_size": 1, "max_train_steps": 1}
    payload["mixed_precision"] = "bf16" if NATIVE_BF16 else "no"
    (workdir / "payload.json").write_text(json.dumps(payload))
    out = workdir / "out"
    command = [sys.executable, "-m", "trainer", "--config", str(workdir / "payload.json"),
               "--base", str(checkpoint), "--data", str(data), "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    assert run.returncode == 0, run.stderr[-4000:]
    lora = out / "last.safetensors"
    step = re.search(r"step 1/1 .* ([\d.]+) s/step", run.stdout)
    # The largest child this process has waited for: the trainer (Linux counts KiB).
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(
        f"full-size run ({payload['mixed_precision']}): {wall:.1f} s wall, "
        f"{step.group(1) if step else '?'} s for the step, "
        f"{peak_rss / 1e9:.1f} GB peak RSS, LoRA {lora.stat().st_size / 1e6:.0f} MB"
    )
    state = load_file(str(lora))
    expected = module_shapes(checkpoint)
    modules = {key.split(".")[0] for key in state}
    assert modules == expected.keys()  # every module maps onto a layer of the checkpoint
    counts = [
        sum(n.startswith(p) for n in modules) for p in ("lora_unet_", "lora_te1_", "lora_te2_")
    ]
    assert counts == [722, 72, 192]
    for name, (out_features, in_features) in expected.items():
        assert state[f"{name}.lora_down.weight"].shape == (32, in_features), name
        assert state[f"{name}.lora_up.weight"].shape == (out_features, 32), name
        assert float(state[f"{name}.alpha"]) == 16.0
