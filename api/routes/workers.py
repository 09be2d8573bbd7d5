from __future__ import annotations

from fastapi import APIRouter

from api.routes.deps import Ctx, CurrentUser
from api.schemas.workers import WorkerList
from api.views import worker_list
from core.workers import counted_workers

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerList)
def get_workers(ctx: Ctx, user: CurrentUser) -> WorkerList:
    """Workers heard from within LORABOX_WORKER_EXPIRY_S: name, GPU, state and job for
    everyone; memory, versions, peak FLOP/s and the learned time model for admins."""
    with ctx.db.reading() as session:
        workers = counted_workers(session, ctx.settings)
    return worker_list(workers, admin=user.is_admin)
