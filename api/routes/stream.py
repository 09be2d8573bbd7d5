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
# An event id is a row id (job_events.id, a 64-bit integer). The header is documented as the
# digits it carries, not as an integer: a header is text, and schemathesis re-reads a sent
# header's text against its schema, so an integer-typed one read as invalid when it wasn't.
MAX_EVENT_ID = 2**63 - 1
EVENT_ID = "^[0-9]{1,18}$"


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}},
)
async def job_events(
    job_id: str,
    ctx: Ctx,
    user: CurrentUser,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", pattern=EVENT_ID, description="the last id seen")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="same as Last-Event-ID")
    ] = None,
) -> EventSourceResponse:
    """Event types: progress, phase, artifact, sample, finished (the stream then ends), and
    queue (the job's place, forecast and `blocked_reason` while it waits, when they change).

    Each event's `id` is its place in the job's event log: reconnect with
    `Last-Event-ID: k` (browsers do it themselves) to receive k+1 onward, no gap, no repeat.
    Data is JSON; `progress` carries the same fields as the job's `progress`."""
    with ctx.db.on_event_loop(), ctx.db.reading() as session:
        get_job(session, user=user, job_id=job_id)  # 404 before the stream starts
    start = int(last_event_id) if last_event_id is not None else after or 0

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for event in follow(
            ctx.db, job_id, start, poll_s=ctx.settings.events_poll_interval_s
        ):
            yield ServerSentEvent(
                json.dumps(event.data, separators=(",", ":")), event=event.type, id=str(event.id)
            )

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})
