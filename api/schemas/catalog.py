from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelRead(BaseModel):
    name: str
    kind: Literal["sdxl", "vae"]
    format: Literal["single_file", "diffusers"]
    size_bytes: int
    sha256: str


class ModelList(BaseModel):
    items: list[ModelRead]
