from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class FolderRead(BaseModel):
    name: str
    repeats: int
    image_count: int


class DatasetRead(BaseModel):
    id: str
    name: str
    image_count: int
    caption_count: int
    folders: list[FolderRead]
    size_bytes: int
    sha256: str
    warnings: list[str]
    created_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetRead]
