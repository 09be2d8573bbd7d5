from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.routes.deps import Ctx
from api.schemas.common import HealthRead

router = APIRouter(tags=["system"])


# A health check answers within this long whatever the database or broker do (a hanging
# server never answers; its probe goes on in its thread, bounded by its own timeouts).
HEALTH_TIMEOUT_S = 0.8


@router.get("/healthz", response_model=HealthRead, responses={503: {"model": HealthRead}})
async def healthz(ctx: Ctx) -> JSONResponse:
    """200 when the database and the broker answer; 503 naming the one that doesn't."""
    database, broker = await asyncio.gather(_check(ctx.db.ping), _check(ctx.broker.ping))
    ok = database == broker == "ok"
    body = HealthRead(status="ok" if ok else "unavailable", database=database, broker=broker)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def _check(probe: Callable[[], None]) -> str:
    try:
        with anyio.fail_after(HEALTH_TIMEOUT_S):
            await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
    except TimeoutError:
        return f"error: no answer within {HEALTH_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure is reported, none raised
        return f"error: {type(exc).__name__}"
    return "ok"
