from __future__ import annotations

from pydantic import BaseModel


class QueueRead(BaseModel):
    paused: bool


class HealthRead(BaseModel):
    status: str
    database: str
    broker: str


class ProblemRead(BaseModel):
    """One thing wrong with a request: where (a field path) and why."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorDetailRead(BaseModel):
    """Every error answer: a reason, or (422) the list of problems, each naming its field."""

    detail: str | list[ProblemRead]
