from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class HealthRead(BaseModel):
    status: str
    database: str
    broker: str


class ProblemRead(BaseModel):
    """One thing wrong with a request: where (a field path) and why."""

    loc: list[str | int]
    msg: str
    type: str
    ctx: dict[str, Any] | None = Field(
        default=None,
        description="what a script needs to act on it; does_not_fit: {suggestions: [{changes, "
        "peak_vram_bytes}]}, each change set checked to fit",
    )


class ErrorDetailRead(BaseModel):
    """Every error answer: a reason, or (422) the list of problems, each naming its field."""

    detail: str | list[ProblemRead]
