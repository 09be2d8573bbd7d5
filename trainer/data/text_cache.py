"""Where cached text-encoder outputs live (``sdxl_cache_text_encoder_outputs``): host memory
or, with ``cache_text_encoder_outputs_to_disk``, one file per image.

Never on the training device: each step copies its batch's outputs there
(``trainer.step.batch_conditioning``), as sd-scripts does (``library/train_util.py:
cache_batch_text_encoder_outputs`` keeps them on the CPU).

* In host memory the outputs are kept in blocks of at most :data:`PIN_BLOCK_BYTES`,
  page-locked when the device is CUDA so the copy runs asynchronously. Blocks, not one
  tensor per image: PyTorch's pinned allocator rounds every allocation up to a power of
  two (``aten/src/ATen/core/CachingHostAllocator.h``), which would take 1 MiB for each
  image's 0.6 MB at 150 tokens.
* On disk, as sd-scripts writes ``<image>_te_outputs.npz`` beside each image
  (``library/train_util.py: BaseDataset.cache_text_encoder_outputs_common``) and reads
  it back for each batch (``BaseDataset.__getitem__``), so the outputs take no memory.
  lorabox writes ``<image>_te_outputs_<fingerprint>.safetensors``: the fingerprint names
  the encoders' weights, the token length and the precision, and the file records a
  digest of its caption, so a cache from another model or an edited caption is encoded
  again (sd-scripts reuses any file it finds: "TODO check validity of cache here").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trainer.storage import atomic_path

TextOutputs = tuple[torch.Tensor, torch.Tensor]  # one image's (context (L+2, 2048), pooled)

PIN_BLOCK_BYTES = 64 * 2**20


def host_rows(
    rows: list[TextOutputs], device: torch.device, host: torch.device
) -> list[TextOutputs]:
    """``rows`` copied to ``host`` as one block per kind; page-locked for a CUDA device."""
    if not rows:
        return []
    pin = device.type == "cuda" and host.type == "cpu"
    blocks = []
    for part in zip(*rows, strict=True):
        stacked = torch.stack(part)
        if pin:
            block = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
            blocks.append(block.copy_(stacked))
        else:
            blocks.append(stacked.to(host))
    contexts, pooled = blocks
    return list(zip(contexts.unbind(0), pooled.unbind(0), strict=True))


def rows_per_block(row: torch.Tensor) -> int:
    """How many images' contexts fill one pinned block."""
    return max(1, PIN_BLOCK_BYTES // (row.numel() * row.element_size()))


def text_fingerprint(
    encoders: Sequence[torch.nn.Module], max_token_length: int, dtype: torch.dtype | None
) -> str:
    """Names what the outputs depend on besides the caption: a few values of every weight of
    both encoders (a fine-tune that changes any layer changes it), the token length and the
    precision they ran in."""
    digest = hashlib.sha256(f"{max_token_length}/{dtype}".encode())
    for encoder in encoders:
        for name, tensor in encoder.state_dict().items():
            values = tensor.detach().flatten()
            picked = torch.cat([values[:8], values[-8:]]).float().cpu()
            digest.update(name.encode() + str(tensor.dtype).encode() + picked.numpy().tobytes())
    return digest.hexdigest()[:16]


def caption_digest(caption: str) -> str:
    return hashlib.sha256(caption.encode()).hexdigest()


def disk_path(image: Path, fingerprint: str) -> Path:
    return image.with_name(f"{image.stem}_te_outputs_{fingerprint}.safetensors")


def is_cached(path: Path, caption: str) -> bool:
    """True when ``path`` holds the outputs of this very caption."""
    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    return metadata.get("caption_sha256") == caption_digest(caption)


def write_outputs(path: Path, caption: str, context: torch.Tensor, pooled: torch.Tensor) -> None:
    tensors = {"context": context.contiguous().cpu(), "pooled": pooled.contiguous().cpu()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"caption_sha256": caption_digest(caption)})


def read_outputs(path: Path) -> TextOutputs:
    with safe_open(str(path), "pt") as handle:
        return handle.get_tensor("context"), handle.get_tensor("pooled")


class DiskTextCache(Sequence[TextOutputs]):
    """Each image's outputs read from its file when a batch asks for them."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> TextOutputs: ...
    @overload
    def __getitem__(self, index: slice) -> list[TextOutputs]: ...
    def __getitem__(self, index: int | slice) -> TextOutputs | list[TextOutputs]:
        if isinstance(index, slice):
            return [read_outputs(path) for path in self.paths[index]]
        return read_outputs(self.paths[index])

    def __iter__(self) -> Iterator[TextOutputs]:
        return (read_outputs(path) for path in self.paths)
