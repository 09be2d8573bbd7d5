"""The Kohya LoRA file: ``<name>.lora_down.weight``, ``.lora_up.weight``, ``.alpha``.

diffusers' ``convert_state_dict_to_kohya`` writes diffusers block names
(``down_blocks_1_attentions_0``) and sets every alpha to the rank; A1111, Forge
and ComfyUI key SDXL LoRAs by the original ``input_blocks_4_1`` names and the
true alpha matters for the scale, so the names come from ``ldm_names`` and the
tensors are laid out here directly, as sd-scripts ``networks/lora.py:
LoRANetwork.save_weights`` writes them. The network type decides the tensors
(``LoraNetwork.file_tensors``): LyCORIS files keep lycoris-lora's own layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save, save_file

from trainer.errors import TrainerError
from trainer.storage import atomic_path

if TYPE_CHECKING:
    from trainer.lora.network import LoraNetwork

SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def kohya_state_dict(network: LoraNetwork, precision: str) -> dict[str, torch.Tensor]:
    """The tensors of the LoRA file, in the network type's own layout."""
    return network.file_tensors(SAVE_DTYPES[precision])


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
    full = {**metadata, **network.file_hashes(state, metadata)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=full)
    return full


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a LoRA file; a clear error when it is not one."""
    try:
        with safe_open(str(path), "pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no dict
    except (SafetensorError, OSError) as exc:
        raise TrainerError(f"network_weights {path.name!r} is not a readable LoRA: {exc}") from exc


def load_lora_into(network: LoraNetwork, path: Path) -> None:
    """Continue from an existing LoRA file (``network_weights``), of the network's type.

    As in sd-scripts, the scale stays ``network_alpha / network_dim`` of the payload
    (unless the network was built from the file: ``dim_from_weights``).
    """
    network.load_file(read_tensors(path), path.name)


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata() or {})


def dataset_dirs_json(folders: dict[str, tuple[int, int]]) -> str:
    return json.dumps({name: {"n_repeats": r, "img_count": n} for name, (r, n) in folders.items()})
