"""``GET /v1/jobs/{id}/events``: the job's live progress as Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.routes.deps import Ctx, CurrentUser
from core.jobs.service import get_job
from core.watch.stream import follow

router = APIRouter(prefix="/v1/jobs", tags=["watch"])


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}},
)
async def job_events(
    job_id: str,
    ctx: Ctx,
    user: CurrentUser,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
    after: Annotated[int | None, Query(ge=0, description="same as Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Event types: progress, phase, artifact, sample, finished (the stream then ends).

    Each event's `id` is its place in the job's event log: reconnect with
    `Last-Event-ID: k` (browsers do it themselves) to receive k+1 onward, no gap, no repeat.
    Data is JSON; `progress` carries the same fields as the job's `progress`."""
    with ctx.db.on_event_loop(), ctx.db.reading() as session:
        get_job(session, user=user, job_id=job_id)  # 404 before the stream starts
    start = last_event_id if last_event_id is not None else after or 0

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for event in follow(
            ctx.db, job_id, start, poll_s=ctx.settings.events_poll_interval_s
        ):
            yield ServerSentEvent(
                json.dumps(event.data, separators=(",", ":")), event=event.type, id=str(event.id)
            )

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})
