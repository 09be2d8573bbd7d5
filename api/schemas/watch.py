"""Response models for watching a job: log chunks and metric series."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LogChunkRead(BaseModel):
    offset: int = Field(description="where this chunk starts (bytes)")
    next_offset: int = Field(description="pass as `offset` to read on")
    text: str
    finished: bool = Field(description="the job ended and the log has nothing more")


class MetricPointRead(BaseModel):
    step: int
    epoch: int
    loss: float
    avg_loss: float = Field(description="Kohya's moving average")
    lr: dict[str, float] = Field(description="learning rate per parameter group")


class MetricSeriesRead(BaseModel):
    since_step: int
    last_step: int = Field(description="pass as `since_step` to fetch only newer points")
    count: int = Field(description="points after `since_step` before downsampling")
    downsampled: bool = Field(
        description="true when `count` exceeded `max_points`: each bucket keeps its first, "
        "lowest, highest and last loss"
    )
    points: list[MetricPointRead]
