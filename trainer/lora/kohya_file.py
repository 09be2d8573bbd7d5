"""The Kohya LoRA file: ``<name>.lora_down.weight``, ``.lora_up.weight``, ``.alpha``.

diffusers' ``convert_state_dict_to_kohya`` writes diffusers block names
(``down_blocks_1_attentions_0``) and sets every alpha to the rank; A1111, Forge
and ComfyUI key SDXL LoRAs by the original ``input_blocks_4_1`` names and the
true alpha matters for the scale, so the names come from ``ldm_names`` and the
tensors are laid out here directly, as sd-scripts ``networks/lora.py:
LoRANetwork.save_weights`` writes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save, save_file

from trainer.errors import TrainerError
from trainer.lora.network import LoraNetwork
from trainer.storage import atomic_path

SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def kohya_state_dict(network: LoraNetwork, precision: str) -> dict[str, torch.Tensor]:
    dtype = SAVE_DTYPES[precision]
    state: dict[str, torch.Tensor] = {}
    for module in network.modules:
        state[f"{module.kohya_name}.lora_down.weight"] = module.down.detach().to("cpu", dtype)
        state[f"{module.kohya_name}.lora_up.weight"] = module.up.detach().to("cpu", dtype)
        state[f"{module.kohya_name}.alpha"] = torch.tensor(module.alpha).to(dtype)
    return {key: value.contiguous() for key, value in state.items()}


def tensor_hashes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """``sshs_model_hash`` / ``sshs_legacy_hash`` as sd-scripts computes them
    (``library/train_util.py: precalculate_safetensors_hashes``): over the file
    serialised with only the ``ss_*`` metadata."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    buffer = save(state, metadata=ss_only)
    header_length = struct.unpack("<Q", buffer[:8])[0]
    model_hash = hashlib.sha256(buffer[8 + header_length :]).hexdigest()
    legacy = hashlib.sha256(
        io.BytesIO(buffer).getbuffer()[0x100000 : 0x100000 + 0x10000]
    ).hexdigest()
    return {"sshs_model_hash": model_hash, "sshs_legacy_hash": legacy[:8]}


def save_lora(
    network: LoraNetwork, path: Path, precision: str, metadata: dict[str, str]
) -> dict[str, str]:
    """Write the LoRA atomically; return the metadata written (with hashes)."""
    state = kohya_state_dict(network, precision)
    full = {**metadata, **tensor_hashes(state, metadata)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=full)
    return full


def load_lora_into(network: LoraNetwork, path: Path) -> None:
    """Continue from an existing Kohya LoRA (``network_weights``).

    Every module of the file must exist in this network with the same shapes;
    a mismatch is reported by name rather than silently skipped. As in
    sd-scripts, the scale stays ``network_alpha / network_dim`` of the payload.
    """
    try:
        with safe_open(str(path), "pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no dict
    except (SafetensorError, OSError) as exc:
        raise TrainerError(f"network_weights {path.name!r} is not a readable LoRA: {exc}") from exc
    modules = network.by_name()
    unknown = sorted({key.split(".")[0] for key in tensors} - modules.keys())
    if unknown:
        raise TrainerError(
            f"network_weights {path.name!r} has {len(unknown)} modules this network lacks "
            f"(e.g. {unknown[0]}): train the same parts (unet_lr / text_encoder_lr) as that file"
        )
    with torch.no_grad():
        for name, module in modules.items():
            for part, parameter in (("lora_down", module.down), ("lora_up", module.up)):
                key = f"{name}.{part}.weight"
                if key not in tensors:
                    continue
                if tensors[key].shape != parameter.shape:
                    raise TrainerError(
                        f"network_weights {path.name!r}: {key} has shape "
                        f"{tuple(tensors[key].shape)}, expected {tuple(parameter.shape)} "
                        "(set network_dim to the file's rank)"
                    )
                parameter.copy_(tensors[key].to(parameter.dtype))


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata() or {})


def dataset_dirs_json(folders: dict[str, tuple[int, int]]) -> str:
    return json.dumps({name: {"n_repeats": r, "img_count": n} for name, (r, n) in folders.items()})
