"""Watching a job: its log (tailable), metric series, loss chart and live events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.routes.deps import Ctx, CurrentUser
from api.schemas.watch import LogChunkRead, MetricSeriesRead
from core.jobs.service import get_job
from core.watch.chart import loss_png
from core.watch.logs import read_log
from core.watch.series import downsample, load_points, series_body

router = APIRouter(prefix="/v1/jobs", tags=["watch"])
CHART_POINTS = 2000


@router.get("/{job_id}/logs", response_model=LogChunkRead)
def job_log(
    job_id: str, ctx: Ctx, user: CurrentUser, offset: Annotated[int, Query(ge=0)] = 0
) -> LogChunkRead:
    """The job's log from byte `offset` (at most 256 KiB); follow with `next_offset`."""
    with ctx.db.reading() as session:
        chunk = read_log(session, ctx.settings, user=user, job_id=job_id, offset=offset)
    return LogChunkRead(**chunk.__dict__)


@router.get("/{job_id}/metrics", response_model=MetricSeriesRead)
def job_metrics(
    job_id: str,
    ctx: Ctx,
    user: CurrentUser,
    since_step: Annotated[int, Query(ge=0)] = 0,
    max_points: Annotated[int, Query(ge=4, le=20_000)] = 1000,
) -> MetricSeriesRead:
    """Loss, moving-average loss and learning rates per step after `since_step`."""
    with ctx.db.reading() as session:
        points = load_points(session, user=user, job_id=job_id, since_step=since_step)
    body = series_body(points, since_step=since_step, max_points=max_points)
    return MetricSeriesRead.model_validate(body)


@router.get(
    "/{job_id}/loss.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the loss chart"}},
)
def job_loss_chart(job_id: str, ctx: Ctx, user: CurrentUser) -> Response:
    """Raw loss and its moving average, the learning rate on a second axis."""
    with ctx.db.reading() as session:
        job = get_job(session, user=user, job_id=job_id)
        title = f"{job.name or job.id} ({job.status})"
        points = load_points(session, user=user, job_id=job_id, since_step=0)
    png = loss_png(downsample(points, CHART_POINTS), title=title)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
