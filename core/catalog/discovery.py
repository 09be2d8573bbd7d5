"""Model discovery in ``LORABOX_MODELS_DIR``.

Rules (documented in the API): a model's name is its file or folder stem.

- ``NAME.safetensors`` at the top level is an SDXL base model if its header holds UNet keys
  (``model.diffusion_model.*``); a ``NAME.config/`` folder beside it holds its diffusers
  configs. A top-level file whose keys are only a VAE's (``encoder.*``/``decoder.*``) is a VAE.
- A folder with ``model_index.json`` is an SDXL model in diffusers format.
- Everything under ``vae/`` is a VAE: ``vae/NAME.safetensors`` or a diffusers ``vae/NAME/``
  folder (``config.json`` + safetensors weights).
- Pickle formats (.ckpt, .pt, .pth, .bin, .pkl) are never listed or loaded; nor are
  safetensors files that are neither (LoRAs, embeddings).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.catalog.hashing import HashCache

Kind = Literal["sdxl", "vae"]
Format = Literal["single_file", "diffusers"]
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: Kind
    format: Format
    path: Path
    config_dir: Path | None  # NAME.config/ beside a single file, if present

    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.rglob("*") if p.is_file())

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())


def read_safetensors_keys(path: Path) -> list[str] | None:
    """The tensor names from a safetensors header, or None if it isn't one."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                return None
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER_BYTES:
                return None
            header = json.loads(fh.read(length))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    return [k for k in header if k != "__metadata__"]


def _single_file_kind(path: Path) -> Kind | None:
    keys = read_safetensors_keys(path)
    if not keys:
        return None
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "sdxl"
    if all(k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")) for k in keys):
        return "vae"
    return None


def _has_pickles_only(folder: Path) -> bool:
    files = [p for p in folder.rglob("*") if p.is_file()]
    has_pickle = any(p.suffix in PICKLE_SUFFIXES for p in files)
    has_safe = any(p.suffix == ".safetensors" for p in files)
    return has_pickle and not has_safe


def _scan_top(models_dir: Path) -> list[ModelInfo]:
    found: list[ModelInfo] = []
    for entry in sorted(models_dir.iterdir()):
        if entry.name.startswith(".") or entry.name == "vae" or entry.name.endswith(".config"):
            continue
        if entry.is_file() and entry.suffix == ".safetensors":
            kind = _single_file_kind(entry)
            if kind is not None:
                config = entry.with_name(entry.stem + ".config")
                found.append(
                    ModelInfo(
                        entry.stem, kind, "single_file", entry, config if config.is_dir() else None
                    )
                )
        elif (
            entry.is_dir()
            and (entry / "model_index.json").is_file()
            and not _has_pickles_only(entry)
        ):
            found.append(ModelInfo(entry.name, "sdxl", "diffusers", entry, None))
    return found


def _scan_vae(vae_dir: Path) -> list[ModelInfo]:
    found: list[ModelInfo] = []
    if not vae_dir.is_dir():
        return found
    for entry in sorted(vae_dir.iterdir()):
        if entry.is_file() and entry.suffix == ".safetensors" and read_safetensors_keys(entry):
            found.append(ModelInfo(entry.stem, "vae", "single_file", entry, None))
        elif entry.is_dir() and (entry / "config.json").is_file() and not _has_pickles_only(entry):
            found.append(ModelInfo(entry.name, "vae", "diffusers", entry, None))
    return found


def list_models(models_dir: Path) -> list[ModelInfo]:
    if not models_dir.is_dir():
        return []
    return _scan_top(models_dir) + _scan_vae(models_dir / "vae")


def find_model(models_dir: Path, name: str, kind: Kind) -> ModelInfo | None:
    for model in list_models(models_dir):
        if model.name == name and model.kind == kind:
            return model
    return None


def model_sha256(model: ModelInfo, cache: HashCache) -> str:
    """A file's SHA-256; for a folder, the SHA-256 of its sorted ``relpath sha`` lines."""
    if model.path.is_file():
        return cache.file_sha256(model.path)
    lines = [
        f"{p.relative_to(model.path).as_posix()} {cache.file_sha256(p)}\n" for p in model.files()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
