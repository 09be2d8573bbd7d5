"""The shared queue: its state (admins pause and resume it) and the team's view of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.routes.deps import Ctx, CurrentUser
from api.schemas.queue import QueueRead, QueueStateRead
from api.views import queue_read
from core.jobs import queue
from core.jobs.broker import send_or_defer
from core.jobs.team_queue import MAX_PAGE, read_queue
from core.workers import counted_workers

router = APIRouter(prefix="/v1/queue", tags=["queue"])
# A page's next_cursor, as given (core/jobs/team_queue.py: encode_cursor).
CURSOR = "^[A-Za-z0-9_-]+$"


@router.post("/pause", response_model=QueueStateRead)
def pause(ctx: Ctx, user: CurrentUser) -> QueueStateRead:
    """Admins: workers finish their current job and start no other until resumed."""
    with ctx.db.writing() as session:
        return QueueStateRead(paused=queue.set_paused(session, user=user, paused=True))


@router.post("/resume", response_model=QueueStateRead)
def resume(ctx: Ctx, user: CurrentUser) -> QueueStateRead:
    """Admins: idle workers start on the queue again (each is woken at once)."""
    with ctx.db.writing() as session:
        paused = queue.set_paused(session, user=user, paused=False)
        idle = sum(w.state == "idle" for w in counted_workers(session, ctx.settings))
    # One wake-up per idle worker; one that finds nothing eligible goes idle again, and a
    # lost one is the reconciler's (docs/reliability.md, "Reconciler").
    for _ in range(max(1, idle)):
        if not send_or_defer(ctx.broker):
            break
    return QueueStateRead(paused=paused)


@router.get("", response_model=QueueRead)
def team_queue(
    ctx: Ctx,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=CURSOR, description="next_cursor, as given"),
    ] = None,
) -> QueueRead:
    """Everyone's running and queued jobs (running first, then by queue position): owner,
    name, base model, place, forecast, priority, hold and why it waits; `mine` marks the
    caller's. Never another user's params, dataset or files. Also the policy, whether the
    queue is paused, and each worker's GPU, job and memory in use."""
    with ctx.db.reading() as session:
        page = read_queue(session, limit=limit, cursor=cursor)
        workers = counted_workers(session, ctx.settings)
    return queue_read(page, user=user, workers=workers, scheduler=ctx.settings.scheduler)
