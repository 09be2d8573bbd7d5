"""Response models for watching a job: log chunks and metric series."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LogChunkRead(BaseModel):
    offset: int = Field(description="where this chunk starts (bytes)")
    next_offset: int = Field(description="pass as `offset` to read on")
    text: str
    finished: bool = Field(description="the job ended and the log has nothing more")
