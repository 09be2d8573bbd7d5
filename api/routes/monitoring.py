"""``GET /metrics`` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.routes.deps import Ctx
from core.watch.prometheus import make_registry, render

router = APIRouter(tags=["system"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "exposition text"}},
)
def metrics(ctx: Ctx) -> Response:
    """Jobs by status, queue depth, job durations, queue waits, steps/s of running jobs,
    bytes uploaded, each user's GPU seconds.

    Unauthenticated, as Prometheus scrapes are; it shows counts, job ids and user names."""
    return Response(render(make_registry(ctx.db)), media_type=CONTENT_TYPE_LATEST)
