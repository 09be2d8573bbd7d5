"""Watching a job: its log (tailable), metric series, loss chart and live events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.routes.deps import Ctx, CurrentUser
from api.schemas.watch import LogChunkRead
from api.watch.logs import read_log

router = APIRouter(prefix="/v1/jobs", tags=["watch"])


@router.get("/{job_id}/logs", response_model=LogChunkRead)
def job_log(
    job_id: str, ctx: Ctx, user: CurrentUser, offset: Annotated[int, Query(ge=0)] = 0
) -> LogChunkRead:
    """The job's log from byte `offset` (at most 256 KiB); follow with `next_offset`."""
    with ctx.db.reading() as session:
        chunk = read_log(session, ctx.settings, user=user, job_id=job_id, offset=offset)
    return LogChunkRead(**chunk.__dict__)
