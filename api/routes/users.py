"""Admins manage other users' GPU-time budgets (docs/scheduling.md, "Quotas"). Users and
tokens themselves are made on the server: `lorabox user add|token|revoke`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.routes.deps import Ctx, CurrentUser
from api.schemas.users import GpuTimeRead, QuotaUpdate, UserQuotaRead
from core.jobs.forecast import refresh_after_change
from core.users import gpu_time, require_admin, set_quota

router = APIRouter(prefix="/v1/users", tags=["users"])
UserName = Annotated[
    str, Path(min_length=1, max_length=200, description="as in `lorabox user add NAME`")
]


def _quota(ctx: Ctx, name: str, gpu_seconds: int | None, window_s: int | None) -> UserQuotaRead:
    with ctx.db.writing() as session:
        row = set_quota(session, name=name, gpu_seconds=gpu_seconds, window_s=window_s)
        time = gpu_time(session, ctx.settings, row)
        read = UserQuotaRead(name=row.name, gpu_time=GpuTimeRead.of(time))
    refresh_after_change(ctx.db, ctx.settings)  # the user's jobs may be eligible now, or not
    return read


@router.put("/{name}/quota", response_model=UserQuotaRead)
def put_quota(name: UserName, body: QuotaUpdate, ctx: Ctx, user: CurrentUser) -> UserQuotaRead:
    """Set a user's budget: at most `gpu_seconds` of worker time in any rolling `window_s`
    (admins). Over it, the user's jobs still queue and wait with `blocked_reason: quota`."""
    require_admin(user, "set quotas")
    return _quota(ctx, name, body.gpu_seconds, body.window_s)


@router.delete("/{name}/quota", response_model=UserQuotaRead)
def delete_quota(name: UserName, ctx: Ctx, user: CurrentUser) -> UserQuotaRead:
    """Lift a user's budget (admins)."""
    require_admin(user, "lift quotas")
    return _quota(ctx, name, None, None)
