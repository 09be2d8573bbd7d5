from __future__ import annotations

from pydantic import BaseModel


class QueueRead(BaseModel):
    paused: bool


class HealthRead(BaseModel):
    status: str
    database: str
    broker: str
