from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.routes.deps import Ctx, CurrentUser
from api.schemas.common import HealthRead, QueueRead
from core.jobs import queue

router = APIRouter(tags=["system"])


@router.post("/v1/queue/pause", response_model=QueueRead)
def pause(ctx: Ctx, user: CurrentUser) -> QueueRead:
    """Admins: workers finish their current job and start no other until resumed."""
    with ctx.db.writing() as session:
        return QueueRead(paused=queue.set_paused(session, user=user, paused=True))


@router.post("/v1/queue/resume", response_model=QueueRead)
def resume(ctx: Ctx, user: CurrentUser) -> QueueRead:
    with ctx.db.writing() as session:
        return QueueRead(paused=queue.set_paused(session, user=user, paused=False))


@router.get("/v1/queue", response_model=QueueRead)
def state(ctx: Ctx, _user: CurrentUser) -> QueueRead:
    with ctx.db.reading() as session:
        return QueueRead(paused=queue.is_paused(session))


@router.get("/healthz", response_model=HealthRead, responses={503: {"model": HealthRead}})
def healthz(ctx: Ctx) -> JSONResponse:
    """200 when the database and the broker answer; 503 naming the one that doesn't."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        ctx.db.ping()
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        ctx.broker.ping()
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = HealthRead(status="ok" if ok else "unavailable", **checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
