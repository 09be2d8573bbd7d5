"""Users' GPU time and the admin's quota on it (docs/scheduling.md, "Usage", "Quotas")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.users import GpuTime


class GpuTimeRead(BaseModel):
    fair_share_s: float = Field(
        description="worker seconds your jobs held, each second halved every "
        "LORABOX_FAIRSHARE_HALF_LIFE_S since: the fair policy serves the least first"
    )
    quota_gpu_seconds: int | None = Field(description="your budget; null: no quota")
    quota_window_s: int | None = Field(description="over any rolling window of this many seconds")
    window_s_used: float | None = Field(
        description="worker seconds (undecayed) inside that window now; null: no quota"
    )
    over_quota: bool = Field(description="your queued jobs wait (blocked_reason quota)")

    @classmethod
    def of(cls, time: GpuTime) -> GpuTimeRead:
        return cls(**vars(time), over_quota=time.over_quota)


class QuotaUpdate(BaseModel):
    """Both fields; DELETE the quota to lift it."""

    model_config = ConfigDict(extra="forbid")

    gpu_seconds: int = Field(ge=0, le=2**53, description="worker seconds allowed per window")
    window_s: int = Field(ge=1, le=2**53, description="the rolling window, in seconds")


class UserQuotaRead(BaseModel):
    name: str
    gpu_time: GpuTimeRead
