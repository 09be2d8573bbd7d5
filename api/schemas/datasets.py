from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, field_validator

from api.schemas.jobs import WarningRead
from core.datasets.service import as_warning


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
    warnings: list[WarningRead]
    created_at: datetime

    @field_validator("warnings", mode="before")
    @classmethod
    def _fielded(cls, stored: list[Any]) -> list[dict[str, Any]]:
        return [as_warning(w) for w in stored]


class DatasetList(BaseModel):
    items: list[DatasetRead]
